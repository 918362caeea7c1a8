"""The matrix-type table: every supported family maps all six matrix types of every layer."""

import pytest

from harness.errors import ConfigError
from harness.families import MATRIX_TYPES, family_for, resolve_targets
from harness.models import meta_model, model_config
from harness.config import ModelConfig
from tests.conftest import compose_cfg


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta", "tiny_deberta", "tiny_llama"])
def test_all_six_types_in_every_layer(model: str) -> None:
    m = compose_cfg([f"model={model}"])["model"]
    conf = model_config(ModelConfig(**m), 2, "classification")
    fam = family_for(conf.model_type)
    refs = resolve_targets(meta_model(conf), fam, list(MATRIX_TYPES))
    n_layers = conf.num_hidden_layers
    per_layer = 7 if fam.name == "llama" else 6  # gate_proj and up_proj are both Wf1
    assert len(refs) == per_layer * n_layers
    assert {(r.layer, r.type) for r in refs} == {(i, t) for i in range(n_layers) for t in MATRIX_TYPES}


def test_unknown_target_lists_available() -> None:
    conf = model_config(ModelConfig(**compose_cfg(["model=tiny_bert"])["model"]), 2, "classification")
    with pytest.raises(ConfigError, match=r"method.targets: 'q_proj'.*Wq.*attention.self.query"):
        resolve_targets(meta_model(conf), family_for("bert"), ["q_proj"])


def test_module_suffix_and_layers() -> None:
    conf = model_config(ModelConfig(**compose_cfg(["model=tiny_bert"])["model"]), 2, "classification")
    refs = resolve_targets(meta_model(conf), family_for("bert"), ["query", "Wv"], layers=[1])
    assert [(r.layer, r.type) for r in refs] == [(1, "Wq"), (1, "Wv")]
    with pytest.raises(ConfigError, match="method.layers"):
        resolve_targets(meta_model(conf), family_for("bert"), ["Wq"], layers=[5])
