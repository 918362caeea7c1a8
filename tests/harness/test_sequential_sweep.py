"""``hydra.sweeper.sequential``: seeds in batches until every contrast is decided or the cap, end to end on a tiny
model; its settings checked before any job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.__main__ import main
from harness.errors import ConfigError
from harness.sweeper import Sequential
from tests.harness.test_compare_preset import write_task


def args(tmp: Path, *extra: str) -> list[str]:
    return ["-m", "compare", "model=tiny_bert", "tracking=none", "snapshot=none", "train.progress=false",
            "train.save_model=false", "train.max_steps=2", "train.eval_every=2", "train.log_every=1",
            "train.batch_size=8", "task.max_eval_samples=16", "task=custom", "hydra.sweeper.params.task=custom",
            "hydra.sweeper.params.method='lora,full'", "hydra.sweeper.select=null",
            "hydra.sweeper.sequential.batch=2", "hydra.sweeper.sequential.max_seeds=4", f"hydra.sweep.dir={tmp / 'sweep'}",
            *write_task(tmp), *extra]


@pytest.mark.slow
def test_seeds_are_added_in_batches_until_decided_or_the_cap(tmp_path: Path, one_thread: Any) -> None:
    assert main(args(tmp_path)) == 0
    sweep = tmp_path / "sweep"
    rec = json.loads((sweep / "sequential.json").read_text())
    assert rec["looks"] == [2, 4] and rec["batch"] == 2
    seeds = sorted(json.loads(f.read_text())["seed"] for f in sweep.glob("*/run.json"))
    last = rec["done"][-1]
    assert seeds == sorted(list(range(last["seeds"])) * 2)  # both methods, every seed up to the last look
    assert len(rec["done"]) == 2 or not rec["done"][0]["undecided"]  # stopped early only when all decided
    assert "LoRA r=8 − Full FT" in next(iter(last["verdicts"]))
    assert set(last["intervals"]) == set(last["verdicts"]) and "O'Brien-Fleming" in rec["boundary"]
    for est, low, high in last["intervals"].values():  # [difference, low, high] of the printed 96% interval
        assert low is None or low <= est <= high


@pytest.mark.parametrize(("node", "select", "key"), [
    ({"batch": 1}, None, "batch"), ({"batch": 4, "max_seeds": 2}, None, "max_seeds"),
    ({"batch": 2, "max_seeds": 4, "margin": 0}, None, "margin"), ({"batch": 2}, {"key": "train.lr_scale"}, "sequential"),
    ({"bacth": 2, "max_seeds": 4}, None, "sequential"), ({"batch": 2, "max_seeds": None}, None, "max_seeds"),
])
def test_bad_settings_name_the_key(node: dict[str, Any], select: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Sequential.parse(node, select)
    assert Sequential.parse({"batch": 3, "max_seeds": 9, "margin": 0.02}, None) == Sequential(3, 9, 0.02)
    assert Sequential.parse({"batch": None, "max_seeds": None, "margin": None}, {"key": "x"}) is None  # off
