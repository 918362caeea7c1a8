"""The matrix-type table: every supported family maps all its matrix types of every layer (six in an encoder, seven
in a gated-FFN decoder: Wg = gate_proj, Wf1 = up_proj, Wf2 = down_proj)."""

import pytest

from harness.errors import ConfigError
from harness.families import MATRIX_TYPES, family_for, resolve_targets
from harness.models import meta_model, model_config
from harness.config import ModelConfig
from tests.conftest import compose_cfg


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta", "tiny_deberta", "tiny_llama"])
def test_every_type_in_every_layer(model: str) -> None:
    m = compose_cfg([f"model={model}"])["model"]
    conf = model_config(ModelConfig(**m), 2, "classification")
    fam = family_for(conf.model_type)
    refs = resolve_targets(meta_model(conf), fam, list(MATRIX_TYPES))  # the default: every type, any family
    n_layers = conf.num_hidden_layers
    types = [t for t in MATRIX_TYPES if fam.name == "llama" or t != "Wg"]
    assert len(types) == (7 if fam.name == "llama" else 6) and len(refs) == len(types) * n_layers
    assert {(r.layer, r.type) for r in refs} == {(i, t) for i in range(n_layers) for t in types}
    if fam.name == "llama":  # one module per type and layer: gate and up apart
        names = {r.type: r.name.rsplit(".", 1)[-1] for r in refs if r.layer == 0}
        assert (names["Wg"], names["Wf1"], names["Wf2"]) == ("gate_proj", "up_proj", "down_proj")


def test_a_type_the_family_lacks_selects_nothing() -> None:
    conf = model_config(ModelConfig(**compose_cfg(["model=tiny_bert"])["model"]), 2, "classification")
    refs = resolve_targets(meta_model(conf), family_for("bert"), ["Wq", "Wg"])
    assert {r.type for r in refs} == {"Wq"}
    with pytest.raises(ConfigError, match=r"method.targets: \['Wg'\] match no adaptable linear layer of this bert "
                                          r"model; use matrix types \['Wq', 'Wk', 'Wv', 'Wo', 'Wf1', 'Wf2'\]"):
        resolve_targets(meta_model(conf), family_for("bert"), ["Wg"])


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
