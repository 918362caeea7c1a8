"""The fair protocol (docs/protocol.md): a validation split carved from train, selection on it, an lr scale,
and AdaLoRA's budget matching and scaling options."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.config import TaskConfig, config_hash, effective_lr, to_typed, validate
from harness.errors import ConfigError, DataError
from harness.run import run
from harness.tasks import carve_validation, index_hash, load_task
from tests.conftest import GLUE, TINY, compose_cfg


def read(p: Path) -> Any:
    return json.loads(p.read_text())


# ------------------------------------------------------------------------------------------ the split


def test_validation_is_carved_from_full_train_and_never_trained_on() -> None:
    cfg = TaskConfig(name="rte", glue_dir=str(GLUE), validation_fraction=0.1, split_seed=3, max_train_samples=200)
    a = load_task(cfg, seed=0)
    b = load_task(cfg, seed=1)  # another training seed: another train subset, the same validation rows
    assert a.valid is not None and a.valid_index is not None and a.train_index is not None
    assert np.array_equal(a.valid_index, b.valid_index) and not np.array_equal(a.train_index, b.train_index)
    assert len(a.valid) == round(0.1 * 2490) and len(a.train) == 200
    for d in (a, b):
        assert not set(d.train_index) & set(d.valid_index)
        assert not set(d.train.texts) & set(d.valid.texts)  # RTE's pairs are unique
    full = load_task(TaskConfig(name="rte", glue_dir=str(GLUE)))
    assert sorted(a.valid.texts) == sorted(full.train.texts[i] for i in a.valid_index)
    assert a.split == {"train_size": 200, "dev_size": 277, "validation_fraction": 0.1, "split_seed": 3,
                       "validation_size": 249, "validation_held_out": 249, "validation_hash": index_hash(a.valid_index)}
    other = load_task(TaskConfig(name="rte", glue_dir=str(GLUE), validation_fraction=0.1, split_seed=4), seed=0)
    assert other.split["validation_hash"] != a.split["validation_hash"]


@pytest.mark.slow
def test_sst2_validation_holds_out_whole_sentences_and_records_it() -> None:
    """sst2.yaml carves by containment groups (harness/splits.py): no validation phrase is among the training
    phrases, the drop is recorded, and a hash of the same config without a split is unchanged."""
    cfg = to_typed(compose_cfg(["task=sst2", f"task.glue_dir={GLUE}", "task.validation_fraction=0.1"])).task
    d = load_task(cfg, seed=0)
    assert cfg.validation_groups == "contained" and d.valid is not None
    assert not set(d.train.texts) & set(d.valid.texts)
    assert d.split["validation_groups"] == "contained" and 0 < d.split["validation_dropped"] < 0.05 * 67349
    assert d.split["validation_size"] + d.split["validation_dropped"] + d.split["train_size"] == 67349


def test_validation_groups_leave_no_split_runs_hash_unchanged() -> None:
    plain = to_typed(compose_cfg(["task=sst2"]))
    assert plain.task.validation_groups == "contained"
    assert config_hash(plain) == config_hash(to_typed(compose_cfg(["task=sst2", "task.validation_groups=none"])))


def test_max_eval_samples_caps_validation_but_the_held_out_rows_stay_out() -> None:
    d = load_task(TaskConfig(name="rte", glue_dir=str(GLUE), validation_fraction=0.2, max_eval_samples=32), seed=0)
    held, _ = carve_validation(2490, 0.2, 0)
    assert len(d.valid) == 32 and d.split["validation_held_out"] == len(held) == 498
    assert len(d.train) == 2490 - 498 and not set(d.train_index) & set(held)


def test_no_split_is_unchanged() -> None:
    d = load_task(TaskConfig(name="rte", glue_dir=str(GLUE), max_train_samples=64), seed=5)
    idx = np.sort(np.random.default_rng(5).permutation(2490)[:64])  # the subsample as before the split existed
    assert d.valid is None and np.array_equal(d.train_index, idx) and "validation_hash" not in d.split


def test_a_split_that_leaves_nothing_to_train_is_refused() -> None:
    with pytest.raises(DataError, match="task.validation_fraction"):
        carve_validation(3, 0.9, 0)


@pytest.mark.parametrize("key,value,expect", [
    ("task.validation_fraction", "1.5", "task.validation_fraction: must be in [0, 1), got 1.5"),
    ("task.validation_fraction", "-0.1", "task.validation_fraction: must be in [0, 1)"),
    ("task.validation_fraction", "nan", "task.validation_fraction: must be a finite number, got nan"),
    ("task.validation_groups", "phrases", "task.validation_groups: none (random rows) or contained"),
    ("train.lr_scale", "0", "train.lr_scale: must be a finite number > 0"),
    ("train.lr_scale", "inf", "train.lr_scale: must be a finite number, got inf"),
    ("method.match", "both", "method.match: one of rank, params"),
    ("method.scaling", "alpha", "method.scaling: one of peft, lora"),
])
def test_bad_values_name_the_key(key: str, value: str, expect: str) -> None:
    extra = ["method=adalora"] if key.startswith("method.") else []
    with pytest.raises(ConfigError) as e:
        validate(to_typed(compose_cfg([*TINY, *extra, f"{key}={value}"])))
    assert expect in str(e.value)


def test_task_split_seed_must_be_an_integer() -> None:
    """Refused by the task schema as Hydra composes the override (the CLI prints the key and the reason), and by
    :func:`to_typed` in a config that Hydra did not compose."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="task.split_seed"):
        compose_cfg([*TINY, "task.split_seed=abc"])
    cfg = compose_cfg(TINY)
    cfg["task"]["split_seed"] = "abc"
    with pytest.raises(ConfigError, match="task.split_seed"):
        to_typed(cfg)


def test_new_keys_at_their_defaults_keep_the_config_hash() -> None:
    """Records made before these keys existed keep their hash; a changed value changes it."""
    base = to_typed(compose_cfg([*TINY, "method=adalora"]))
    explicit = to_typed(compose_cfg([*TINY, "method=adalora", "train.lr_scale=1.0", "task.validation_fraction=0",
                                     "method.match=rank", "method.scaling=peft", "task.split_seed=7"]))
    assert config_hash(base) == config_hash(explicit)
    for extra in ("train.lr_scale=2", "task.validation_fraction=0.1", "method.match=params", "method.scaling=lora"):
        assert config_hash(to_typed(compose_cfg([*TINY, "method=adalora", extra]))) != config_hash(base), extra
    v1 = to_typed(compose_cfg([*TINY, "task.validation_fraction=0.1"]))
    v2 = to_typed(compose_cfg([*TINY, "task.validation_fraction=0.1", "task.split_seed=1"]))
    assert config_hash(v1) != config_hash(v2)


def test_lr_scale_multiplies_the_methods_lr_or_train_lr() -> None:
    assert effective_lr(to_typed(compose_cfg([*TINY, "method=lora", "train.lr_scale=2"]))) == pytest.approx(1e-3)
    assert effective_lr(to_typed(compose_cfg([*TINY, "train.lr=1e-4", "train.lr_scale=0.5"]))) == pytest.approx(5e-5)


def test_lr_scale_per_method_resolves_to_the_runs_number_with_the_same_hash() -> None:
    """The default sweep's per-method scales: a run's typed config, hash and lr are those of one number."""
    per = "train.lr_scale={default: 2.0, adalora: 4.0}"
    for method, scale in (("lora", 2.0), ("adalora", 4.0), ("full", 2.0)):
        got = to_typed(compose_cfg([*TINY, f"method={method}", per]))
        plain = to_typed(compose_cfg([*TINY, f"method={method}", f"train.lr_scale={scale}"]))
        assert got.train.lr_scale == scale and config_hash(got) == config_hash(plain), method
    sweep = to_typed(compose_cfg(["experiment=sweep", "method=adalora", "budget=4", "train.device=cpu"]))
    assert sweep.train.lr_scale == 4.0 and effective_lr(sweep) == pytest.approx(4e-3)
    with pytest.raises(ConfigError, match=r"train.lr_scale: no entry for method 'dora'.*add 'dora: <number>'"):
        to_typed(compose_cfg([*TINY, "method=dora", "train.lr_scale={lora: 2.0}"]))


# ---------------------------------------------------------------------------------- selection in a run


def test_run_selects_best_on_validation_and_records_the_split(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "method=lora", "snapshot=none", "train.save_model=false", "train.eval_every=2",
                       "task.validation_fraction=0.1", "train.lr_scale=2"])
    s = run(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval/accuracy" in r}
    assert sorted(evals) == [2, 4, 6] and all("valid/accuracy" in r for r in evals.values())
    assert s["best_selected_on"] == "validation" and s["lr"] == pytest.approx(1e-3) and s["lr_scale"] == 2
    best_step = s["best_step"]
    assert s["best_valid/accuracy"] == evals[best_step]["valid/accuracy"]
    assert s["best/accuracy"] == evals[best_step]["eval/accuracy"]  # dev metrics at the step chosen on validation
    assert s["best_valid/accuracy"] == max(r["valid/accuracy"] for r in evals.values())
    first_best = min(k for k, r in evals.items() if r["valid/accuracy"] == s["best_valid/accuracy"])
    assert best_step == first_best  # ties keep the earlier step
    assert s["valid/accuracy"] == evals[6]["valid/accuracy"] and s["eval/accuracy"] == evals[6]["eval/accuracy"]
    split = s["split"]
    assert split["validation_size"] == 32 and split["train_size"] == 64 and split["split_seed"] == 0
    assert read(tmp_path / "run.json")["data_split"] == split and read(tmp_path / "run.json")["lr"] == s["lr"]
    # the chance level of the dev metric, for analysis.compare.not_learned: the dev set's majority-class rate
    dev = load_task(to_typed(cfg).task).dev
    assert s["dev_examples"] == len(dev) == split["dev_size"]
    assert s["dev_majority_rate"] == pytest.approx(np.bincount(dev.labels.astype(int)).max() / len(dev))


def test_run_without_split_marks_best_as_selected_on_test(tmp_path: Path) -> None:
    s = run(compose_cfg([*TINY, "method=lora", "snapshot=none", "train.save_model=false"]), tmp_path)
    assert s["best_selected_on"] == "test" and "best/accuracy" in s and s["best_step"] in (3, 6)
    assert not any(k.startswith(("valid/", "best_valid/")) for k in s)


# ------------------------------------------------------------------------------------- AdaLoRA options


def test_match_params_gives_lora_trained_parameters(tmp_path: Path) -> None:
    from harness.methods.adalora import matched_lora_r

    for b in (2, 4, 8):
        ada = to_typed(compose_cfg([*TINY, "method=adalora", f"budget={b}", "method.match=params"])).method
        assert ada.init_r == b and ada.target_r == max(1, round(b / 1.5)) and matched_lora_r(ada) == b
        rank = to_typed(compose_cfg([*TINY, "method=adalora", f"budget={b}"])).method
        assert rank.init_r == math.ceil(1.5 * b) and rank.target_r == b and matched_lora_r(rank) == b
    common = [*TINY, "snapshot=none", "train.save_model=false", "train.max_steps=3", "train.eval_every=3",
              "budget=4", "task.max_eval_samples=8"]
    lora = run(compose_cfg([*common, "method=lora"]), tmp_path / "lora")
    ada = run(compose_cfg([*common, "method=adalora", "method.match=params", "method.deltaT=1",
                           "method.tinit=0", "method.tfinal=1"]), tmp_path / "ada")
    n_matrices = lora["adapted_matrices"]
    assert ada["trainable_params"] == lora["trainable_params"] + 4 * n_matrices  # λ: r numbers per matrix


@pytest.mark.parametrize("match", ["rank", "params"])
def test_scaling_lora_equals_loras_scale_in_peft(match: str) -> None:
    """PEFT's own SVDLinear computes scaling / (ranknum + 1e-5); with scaling=lora that equals alpha / r."""
    import torch

    from harness.run import plan

    def scales(*extra: str) -> set[float]:
        p = plan(compose_cfg([*TINY, "method=adalora", "method.deltaT=1", "budget=8", f"method.match={match}", *extra]))
        from harness.models import load_model

        torch.manual_seed(0)
        model = p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head)
        out = set()
        for mod in model.modules():
            if hasattr(mod, "ranknum") and "default" in getattr(mod, "ranknum", {}):
                out.add(float(mod.scaling["default"] / (mod.ranknum["default"] + 1e-5)))
        assert out
        return out

    init_r = 12 if match == "rank" else 8
    (peft_scale,) = scales()
    assert peft_scale == pytest.approx(16 / (init_r + 1e-5), rel=1e-6)
    (lora_scale,) = scales("method.scaling=lora")
    assert lora_scale == pytest.approx(16 / 8, rel=1e-6)  # LoRA at r = budget = 8, alpha 16


def test_resume_restores_best_tracking_on_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the checkpoint at step 8: the resumed run's best step and metrics equal the uninterrupted
    run's (the evaluation at step 5 is only known through the checkpoint)."""
    from harness import checkpoint as ck
    from tests.harness.test_resume import Crash, crash_after

    cfg = compose_cfg([*TINY, "method=lora", "snapshot=none", "train.save_model=false", "train.max_steps=12",
                       "train.checkpoint_every=4", "train.eval_every=5", "task.validation_fraction=0.2"])
    ref = run(cfg, tmp_path / "ref")
    with monkeypatch.context() as m:
        crash_after(m, 10)
        with pytest.raises(Crash):
            run(cfg, tmp_path / "res")
    loop_state = ck.latest(tmp_path / "res").tree["loop"]
    assert loop_state["best_step"] == 5 and loop_state["best_valid"] and loop_state["final_valid"]
    out = run(cfg, tmp_path / "res")
    assert out["resumed_from"] == 8
    keys = [k for k in ref if k.startswith(("eval/", "valid/", "best")) or k == "split"]
    assert {k: out[k] for k in keys} == {k: ref[k] for k in keys}
