"""The ``compare`` preset's two-stage selection, end to end on a tiny model: stage 1 over lr_scale at seed 0 on a
validation split, the choice in selection.json, stage 2 at the chosen value for every seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.__main__ import main
from harness.config import to_typed
from harness.tasks import index_hash, load_task
from tests.conftest import compose_cfg

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def write_task(tmp: Path, n_train: int = 400, n_dev: int = 16) -> list[str]:
    """A custom CSV task with unique sentences; overrides selecting it."""
    rng = np.random.default_rng(0)

    def rows(n: int, tag: str) -> str:
        lines = ["text,label"]
        for i in range(n):
            label = int(rng.integers(2))
            lines.append(f"{tag} {i} {' '.join(rng.choice(WORDS, 5))} {'good' if label else 'bad'},{label}")
        return "\n".join(lines) + "\n"

    (tmp / "train.csv").write_text(rows(n_train, "train"))
    (tmp / "dev.csv").write_text(rows(n_dev, "dev"))
    return [f"task.train_file={tmp / 'train.csv'}", f"task.dev_file={tmp / 'dev.csv'}"]


def args(tmp: Path, *extra: str) -> list[str]:
    return ["-m", "compare", "model=tiny_bert", "tracking=none", "snapshot=none", "train.progress=false",
            "train.save_model=false", "train.max_steps=3", "train.eval_every=2", "train.log_every=1",
            "train.batch_size=8", "task.max_eval_samples=32", "task=custom", "hydra.sweeper.params.task=custom",
            "hydra.sweeper.params.method='lora,full'", "hydra.sweeper.select.values=[1.0,4.0]",
            "hydra.sweeper.select.seeds=[0,1]", f"hydra.sweep.dir={tmp / 'sweep'}", *write_task(tmp), *extra]


def runs(sweep: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(sweep.glob("*/run.json")):
        rec = json.loads(f.read_text())
        rec["_summary"] = json.loads((f.parent / "summary.json").read_text())
        rec["_dir"] = f.parent
        out.append(rec)
    return out


def test_two_stage_selection_end_to_end(tmp_path: Path, one_thread: Any) -> None:
    assert main(args(tmp_path, "hydra.sweeper.select.extend=0")) == 0
    sweep = tmp_path / "sweep"
    sel = json.loads((sweep / "selection.json").read_text())
    assert sel["key"] == "train.lr_scale" and sel["values"] == [1.0, 4.0] and sel["seeds"] == [0, 1]
    assert sel["metric"] == "valid" and sel["stage1_seed"] == 0
    assert len(sel["points"]) == 2  # lora, full (budget 8, task custom)
    recs = runs(sweep)
    assert len(recs) == 2 * 2 + 2 * 1  # stage 1: 2 methods x 2 lr; stage 2: one new seed per method
    assert all(r["status"] == "done" for r in recs)
    chosen_by_method = {}
    for point in sel["points"]:
        method = next(o.split("=")[1] for o in point["overrides"] if o.startswith("method="))
        assert point["point"] == f"task=custom method={method} budget=8"
        cands = point["candidates"]
        assert [c["value"] for c in cands] == [1.0, 4.0] and all(c["score"] is not None for c in cands)
        best = max(cands, key=lambda c: c["score"])  # accuracy: higher is better; ties -> first listed
        assert point["chosen"] == best["value"] and point["main_metric"] == "accuracy"
        for c in cands:  # the score is the candidate run's final validation accuracy
            s = json.loads((Path(c["run_dir"]) / "summary.json").read_text())
            assert s["valid/accuracy"] == c["score"] and s["lr_scale"] == c["value"] and s["seed"] == 0
        chosen_by_method[method] = point["chosen"]
        assert [st["overrides"][-1] for st in point["stage2"]] == ["seed=0", "seed=1"]
        assert all(st["run_dir"] for st in point["stage2"])
    for method, chosen in chosen_by_method.items():
        mine = [r for r in recs if r["method"] == method]
        by_seed = {}
        for r in mine:
            by_seed.setdefault(r["seed"], []).append(r["config"]["train"]["lr_scale"])
        assert sorted(by_seed[0]) == [1.0, 4.0]  # stage 1 (its run at the chosen value is stage 2's seed 0)
        assert by_seed[1] == [chosen]  # stage 2: only the chosen lr, for each further seed
        base_lr = 5e-4 if method == "lora" else 5e-5
        for r in mine:
            assert r["_summary"]["lr"] == pytest.approx(base_lr * r["config"]["train"]["lr_scale"])
            assert r["_summary"]["best_selected_on"] == "validation"

    # the validation rows are never trained on, and every run scored the same validation rows
    hashes = {r["_summary"]["split"]["validation_hash"] for r in recs}
    assert len(hashes) == 1
    for r in recs:
        typed = to_typed(r["config"])
        data = load_task(typed.task, seed=typed.seed)
        assert data.valid is not None and index_hash(data.valid_index) in hashes
        assert not set(data.train.texts) & set(data.valid.texts)
        assert not set(data.train_index) & set(data.valid_index)
        assert r["_summary"]["split"]["train_size"] == len(data.train) == 360  # 400 rows, 40 held out

    # the same command again: every job found done, the same choice
    before = {r["_dir"]: r["attempt"] for r in recs}
    assert main(args(tmp_path, "hydra.sweeper.select.extend=0")) == 0
    again = json.loads((sweep / "selection.json").read_text())
    assert [p["chosen"] for p in again["points"]] == [p["chosen"] for p in sel["points"]]
    assert {r["_dir"]: r["attempt"] for r in runs(sweep)} == before


def test_a_choice_at_the_grid_edge_extends_the_grid_that_way(tmp_path: Path, one_thread: Any) -> None:
    """Two values: the choice is at an edge, so one more value is tried beyond it (x4: 0.25 below 1, 16 above
    4); extend=1 stops there, and selection.json marks a choice still at an edge."""
    extra = ["hydra.sweeper.params.method=lora", "hydra.sweeper.select.extend=1", "hydra.sweeper.select.seeds=[0]"]
    assert main(args(tmp_path, *extra)) == 0
    sel = json.loads((tmp_path / "sweep" / "selection.json").read_text())
    (point,) = sel["points"]
    values = [c["value"] for c in point["candidates"]]
    assert values[:2] == [1.0, 4.0] and len(values) == 3 and values[2] in (0.25, 16.0)
    first = max(point["candidates"][:2], key=lambda c: c["score"])["value"]  # the choice before extending
    assert values[2] == (16.0 if first == 4.0 else 0.25)
    assert point["at_grid_edge"] == (point["chosen"] in (min(values), max(values))) and sel["extend"] == 1
    assert len(list((tmp_path / "sweep").glob("*/run.json"))) == 3


@pytest.mark.parametrize("extra,expect", [
    (["hydra.sweeper.select.extend=-1"], "hydra.sweeper.select.extend: values to add beyond"),
    (["seed=3"], "seed: set by hydra.sweeper.select"),
    (["train.lr_scale=2"], "train.lr_scale: set by hydra.sweeper.select"),
    (["hydra.sweeper.select.metric=dev"], "hydra.sweeper.select.metric: one of valid, best_valid"),
    (["hydra.sweeper.select.values=[]"], "hydra.sweeper.select.values: a non-empty list"),
    (["hydra.sweeper.select.seeds=[0,0]"], "hydra.sweeper.select.seeds: a non-empty list of distinct integers"),
    (["task.validation_fraction=0"], "hydra.sweeper.select: selection is on the validation split"),
])
def test_bad_selection_settings_exit_2_before_any_run(extra: list[str], expect: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not list((tmp_path / "sweep").glob("*/run.json"))


def test_compare_preset_composes() -> None:
    typed = to_typed(compose_cfg(["experiment=compare", "method=adalora"]))
    assert typed.task.validation_fraction == 0.1 and typed.train.max_steps == 800 and typed.budget == 8
