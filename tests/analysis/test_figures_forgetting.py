"""``python -m analysis figures forgetting``: the learned score beside forgetting, per configuration, on records of
real tiny causal-LM runs (seeds made by copying a run folder and writing other numbers into its records)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis.__main__ import main as analysis_main
from analysis.figures_forgetting import forgetting, measure_label, recorded_measures


def cli(*argv: str) -> int:
    return analysis_main(["figures", "forgetting", *argv])


def seed_copy(src: Path, dst: Path, seed: int, values: dict[str, float], config: dict[str, Any] | None = None) -> Path:
    """``src`` copied as another run: its seed, config hash and ``values`` (summary keys) replaced; ``config``:
    keys of the recorded configuration set (``{"method": {"lr": 0.1}}``)."""
    shutil.copytree(src, dst)
    rec = json.loads((dst / "run.json").read_text())
    rec.update(seed=seed, config_hash=f"{rec['config_hash'][:8]}{seed:04d}{len(config or {}):04d}")
    rec["config"]["seed"] = seed
    for group, keys in (config or {}).items():
        rec["config"][group].update(keys)
    (dst / "run.json").write_text(json.dumps(rec))
    summary = json.loads((dst / "summary.json").read_text())
    summary.update(seed=seed, **values)
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


#: learned exact match (final − base) and text-loss increase per seed: full FT learns and forgets more
NUMBERS = {"lora": ([0.1, 0.2, 0.3], [0.01, 0.02, 0.03]), "full": ([0.3, 0.4, 0.5], [0.1, 0.2, 0.3])}


def make_sweep(runs: Path, sweep: Path) -> Path:
    for method, (learned, forgot) in NUMBERS.items():
        for seed, (l, f) in enumerate(zip(learned, forgot)):
            seed_copy(runs / method, sweep / f"{method}_s{seed}", seed,
                      {"base/exact_match": 0.05, "eval/exact_match": 0.05 + l, "main_metric_value": 0.05 + l,
                       "forget/text/loss/change": f, "forget/leg_counting/exact_match/change": -f})
    return sweep


def test_registered_as_figures_forgetting() -> None:
    from analysis.__main__ import COMMANDS

    assert any(words == ("figures", "forgetting") and module == "analysis.figures_forgetting"
               for words, module, _ in COMMANDS)


def test_direction_of_each_measure() -> None:
    change = pd.Series([0.5, -0.25])
    assert forgetting(change, "text/loss").tolist() == [0.5, -0.25]  # a loss that rises is forgetting
    assert forgetting(change, "leg_counting/exact_match").tolist() == [-0.5, 0.25]  # a score that drops is
    assert measure_label("text/loss") == "text loss increase"
    assert measure_label("leg_counting/exact_match") == "leg_counting exact_match drop"


def test_learned_beside_forgotten_with_seed_intervals(tiny_decoder_runs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tiny_decoder_runs, tmp_path / "sweep")
    out = tmp_path / "fig"
    assert cli(str(sweep), "-o", str(out)) == 0
    for name in ("forgetting.png", "forgetting.pdf", "forgetting.csv", "forgetting_summary.csv", "forgetting_runs.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "forgetting_summary.csv")
    assert set(summary["measure"]) == {"leg_counting/exact_match", "leg_counting/loss", "text/loss"}
    text = summary[summary["measure"] == "text/loss"].set_index("method")
    assert list(text.index) == ["full", "lora"]  # the methods' recorded order: the baseline first
    for method, (learned, forgot) in NUMBERS.items():
        row = text.loc[method]
        assert row["n"] == 3 and row["seeds"] == "0,1,2" and row["base"] == pytest.approx(0.05)
        for col, values in (("learned", learned), ("forgetting", forgot)):
            lo, hi = st.t.interval(0.95, 2, loc=np.mean(values), scale=st.sem(values))
            assert (row[f"{col}_mean"], row[f"{col}_low"], row[f"{col}_high"]) == pytest.approx((np.mean(values), lo, hi))
    drop = summary[summary["measure"] == "leg_counting/exact_match"].set_index("method")
    assert drop.loc["full", "forgetting_mean"] == pytest.approx(0.2)  # the score fell by 0.2: forgetting +0.2
    printed = capsys.readouterr().out
    assert "Full FT: learned exact_match +0.4 [" in printed and "forgetting (text loss increase) +0.2 [" in printed
    drawn = pd.read_csv(out / "forgetting.csv")
    assert (drawn["kind"] == "seed").sum() == 3 * 6 and (drawn["kind"] == "mean").sum() == 3 * 2


def test_a_setting_that_differs_is_its_own_group(tiny_decoder_runs: Path, tmp_path: Path) -> None:
    """Runs that differ in anything but the seed (here the lr) are never pooled as seeds."""
    sweep = make_sweep(tiny_decoder_runs, tmp_path / "sweep")
    seed_copy(tiny_decoder_runs / "lora", sweep / "lora_lr_s0", 0, {"base/exact_match": 0.0},
              {"method": {"lr": 0.05}})
    assert cli(str(sweep), "-o", str(tmp_path / "fig"), "--measure", "text/loss") == 0
    summary = pd.read_csv(tmp_path / "fig" / "forgetting_summary.csv")
    assert len(summary) == 3 and sorted(summary["n"]) == [1, 3, 3]
    assert summary.loc[summary["n"] == 1, "label"].item().endswith("(method.lr=0.05)")


def test_unrecorded_measure_and_runs_without_forgetting_exit_2(tiny_decoder_runs: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(str(tiny_decoder_runs), "-o", str(tmp_path / "a"), "--measure", "wiki/loss") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --measure: wiki/loss is not recorded by these runs; they have")
    from tests.analysis.test_compare import make_sweep as glue_sweep

    assert cli(str(glue_sweep(tmp_path / "glue")), "-o", str(tmp_path / "b")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no run records forgetting")


def test_recorded_measures_are_read_from_the_records(tiny_decoder_runs: Path) -> None:
    from analysis.inputs import load_inputs

    runs, _, _ = load_inputs([tiny_decoder_runs])
    assert recorded_measures(runs) == ["leg_counting/exact_match", "leg_counting/loss", "text/loss"]
