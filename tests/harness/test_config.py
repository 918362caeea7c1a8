"""The schemas in Hydra's ConfigStore: option files list only what differs, configurations keep their hash,
overrides the schemas reject are reported on one line naming the key, and each method's schema states its budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from harness.__main__ import main
from harness.config import SCHEMA_GROUP, config_hash, to_typed
from harness.methods import METHODS
from tests.conftest import CONF, TINY, compose_cfg

#: hashes of configurations as the option files before the ConfigStore schemas composed them (each file
#: repeating every default): runs are found again, skipped and resumed by these
HASHES = [
    ([], "fb33cb60f98f4f37"),
    (["method=full"], "8108ebce72105b07"),
    (["method=dora"], "18c4b471a4557d9b"),
    (["method=adalora"], "3c00d29c39bc7401"),
    (["method=adalora", "method.match=params"], "2b273847ef1c37b9"),
    (["experiment=sweep", "method=adalora", "budget=4", "train.device=cpu"], "fedb51966e28d08b"),
    (["experiment=compare", "task=rte", "method=dora"], "5b2214bbe084508e"),
    (["experiment=dora_fig2", "method=full"], "cdf4ef068d75a212"),
    (["experiment=adalora_glue", "task=rte", "budget=2"], "f46a2a21ced636af"),
    (["snapshot=none", "tracking=none", "task=custom", "task.train_file=a.csv", "task.dev_file=b.csv"],
     "0e14febceb17e0f0"),
    (["snapshot=log", "model=tiny_llama"], "39b53834e9d20433"),
    (["snapshot=every", "model=hf", "model.name=roberta-base"], "66cf0688bcf015a1"),
    ([*TINY, "method=lora"], "388bfa83fecb18a8"),
]


@pytest.mark.parametrize("overrides,expected", HASHES, ids=[" ".join(o) or "defaults" for o, _ in HASHES])
def test_config_hashes_are_unchanged(overrides: list[str], expected: str) -> None:
    assert config_hash(to_typed(compose_cfg(overrides))) == expected


def _option_files() -> list[Path]:
    groups = ("method", "model", "task", "train", "tracking", "snapshot")
    return sorted(f for g in groups for f in (CONF / g).glob("*.yaml"))


@pytest.mark.parametrize("path", _option_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_option_files_name_their_schema_and_set_only_what_differs(path: Path) -> None:
    """Each option file builds on its group's schema and sets no key to the schema's own default (``name``
    excepted: it says which option the file is). ``model/hf`` is the one file without a schema: its required
    ``name: ???`` would lose to the schema's default in a merge."""
    doc = yaml.safe_load(path.read_text()) or {}
    group = path.parent.name
    if path == CONF / "model" / "hf.yaml":
        assert "defaults" not in doc and doc["name"] == "???"
        return
    schema_path = f"{SCHEMA_GROUP}/method/{path.stem}" if group == "method" else f"{SCHEMA_GROUP}/{group}"
    assert doc["defaults"] == [f"/{schema_path}@_here_", "_self_"]
    node = ConfigStore.instance().load(f"{schema_path}.yaml").node
    defaults = OmegaConf.to_container(node, resolve=False)
    same = [k for k, v in doc.items() if k not in ("defaults", "name") and defaults.get(k) == v]
    assert not same, f"{path.name} repeats the schema's defaults of {same}"


def test_every_registered_method_has_its_schema_in_the_store() -> None:
    for name, cls in METHODS.items():
        node = ConfigStore.instance().load(f"{SCHEMA_GROUP}/method/{name}.yaml").node
        assert OmegaConf.get_type(node) is cls.config_cls, name


def test_a_per_method_lr_scale_passes_the_schema() -> None:
    """``train.lr_scale`` may be a mapping in a config file (the default sweep's); the typed config holds the
    run's number."""
    typed = to_typed(compose_cfg([*TINY, "method=adalora", "train.lr_scale={default: 2.0, adalora: 4.0}"]))
    assert typed.train.lr_scale == 4.0


@pytest.mark.parametrize("override,line", [
    ("train.max_steps=abc", "error: train.max_steps: Value 'abc' of type 'str' could not be converted to Integer"),
    ("snapshot.enabled=maybe", "error: snapshot.enabled: Value 'maybe' is not a valid bool (type str)"),
    ("model.max_length=1.5", "error: model.max_length: Value '1.5' of type 'float' could not be converted to Integer"),
])
def test_an_override_the_schema_rejects_is_one_line_naming_the_key(override: str, line: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, override, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert err == [line]


@pytest.mark.parametrize("overrides,budget", [
    (["method=lora", "budget=4"], 4),
    (["method=dora", "budget=16"], 16),
    (["method=lora", "method.r=12"], 12),  # r set directly: the run's budget is its r, whatever `budget` says
    (["method=adalora", "budget=8"], 8),  # target_r = 8, init_r = 12
    (["method=adalora", "budget=8", "method.match=params"], 8),  # init_r = 8, target_r = 5: matched with LoRA r=8
    (["method=full", "budget=8"], None),
])
def test_the_budget_is_the_lora_rank_the_run_is_matched_with(overrides: list[str], budget: int | None) -> None:
    assert to_typed(compose_cfg([*TINY, *overrides])).method.budget() == budget


def test_the_budget_method_is_not_a_config_field() -> None:
    """``budget()`` is derived: it never enters the record's config or its hash."""
    typed = to_typed(compose_cfg([*TINY, "method=lora"]))
    assert "budget" not in {f.name for f in dataclasses.fields(typed.method)}


def test_compile_auto_is_the_experiment_of_none() -> None:
    """The default train.compile=auto hashes as none (the path changes the speed, not the experiment; runs
    recorded before it keep their identity), explicit paths and a non-default train.length_buckets do not."""
    h = lambda *o: config_hash(to_typed(compose_cfg(list(o))))  # noqa: E731
    assert h() == h("train.compile=none") == h("train.compile=auto", "train.length_buckets=0")
    assert len({h(), h("train.compile=graphs"), h("train.compile=model"), h("train.length_buckets=3")}) == 4


def test_a_target_list_without_the_gate_is_not_the_default() -> None:
    """Every type (with Wg) hashes as the six-type list every record held before Wg was a type; an explicit list
    naming FFN matrices without Wg (on a gated FFN: up/down without the gate) hashes apart from both."""
    h = lambda *o: config_hash(to_typed(compose_cfg(["model=tiny_llama", *o])))  # noqa: E731
    six = "method.targets=[Wq,Wk,Wv,Wo,Wf1,Wf2]"
    assert h() != h(six) != h("method.targets=[Wq,Wk,Wv,Wo,Wf1]")
    assert h("method.targets=[Wq,Wv]") != h() and h("method.targets=[Wq,Wv,Wg,Wf1,Wf2]") != h()
