"""``python -m analysis figures spectra``: the files it writes for a sweep of several methods, ranks and lrs,
bad options, nothing to measure, W&B. The decision API is the stand-in of test_spectra_claims."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from harness.config import SnapshotConfig
from harness.families import MATRIX_TYPES
from harness.run_record import RunRecord
from tests.analysis.test_spectra_claims import fake_stats  # noqa: F401  (fixture)
from tests.harness.test_snapshots import snapshot_run

CONFIGS = (("full", None, 1e-4), ("lora", 2, 1e-3), ("lora", 4, 1e-3), ("lora", 4, 4e-3), ("dora", 4, 1e-3))


def make_sweep(root: Path, *, seeds: tuple[int, ...] = (0, 1), configs: tuple = CONFIGS, wandb: bool = False) -> None:
    """Run folders with snapshots at steps 3, 6 (full FT: its matrices stored), as a sweep leaves them."""
    cfg = SnapshotConfig(schedule="steps", steps=[3, 6], full_weights=list(MATRIX_TYPES))
    for method, r, lr in configs:
        for seed in seeds:
            d = root / f"{method}_r{r}_lr{lr:g}_s{seed}"
            snapshot_run(d / "snapshots", method, steps=(3, 6), cfg=cfg, overrides=(f"method.r={r}",) if r else ())
            rec = RunRecord(d)
            rec.start(method=method, seed=seed, task="sst2", model="tiny_bert", group=root.name, budget=r, lr=lr,
                      total_steps=6, config={"method": {"name": method, "lr": lr}, "train": {"lr": None},
                                             "tracking": {"wandb": wandb, "mode": "offline" if wandb else "disabled",
                                                          "project": "t"}})
            rec.done()


def test_files_figures_and_verdicts(tmp_path: Path, fake_stats: list, one_thread: None,  # noqa: F811
                                    capsys: pytest.CaptureFixture[str]) -> None:
    make_sweep(tmp_path / "sweep")
    out = tmp_path / "out"
    assert main(["figures", "spectra", str(tmp_path / "sweep"), "-o", str(out), "--device", "cpu"]) == 0
    for name in ("intruders_vs_rank", "intruders_vs_lr", "spectrum", "similarity_seed", "similarity_rank",
                 "similarity_reference", "over_steps"):
        for ext in ("png", "pdf", "csv"):
            assert (out / f"spectra_{name}.{ext}").stat().st_size > 0, (name, ext)
    measures = pd.read_csv(out / "spectra_measures.csv")
    assert {"run", "seed", "step", "layer", "type", "measure", "value"} <= set(measures.columns)
    assert measures["run_dir"].nunique() == 10 and set(measures["step"]) == {3, 6}
    per_run = pd.read_csv(out / "spectra_per_run.csv")
    one = per_run[per_run["run"] == "lora_r4_lr0.001_s0"].iloc[0]
    f = measures[(measures["run"] == "lora_r4_lr0.001_s0") & (measures["step"] == 6) & (measures["measure"] == "intruders")]
    assert one["intruders"] == pytest.approx(f["value"].mean())  # each run's value: the mean over its matrices
    claims = pd.read_csv(out / "spectra_claims.csv")
    assert set(claims["claim"]) == {"intruders_lora_vs_full", "effective_rank_full_vs_lora",
                                    "similarity_dora_vs_lora_to_full", "lr_intruders"}
    assert claims["reading"].notna().all() and len(fake_stats) == len(claims)
    md = (out / "spectra.md").read_text()
    assert "Command: `python -m analysis figures spectra" in md and "a higher lr gives more intruders" in md
    assert "| claim |" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [(["--top-k", "0"], "--top-k"), (["--epsilon", "1.5"], "--epsilon"),
                                         (["--energy", "0"], "--energy"), (["--top-r", "0"], "--top-r"),
                                         (["--device", "tpu"], "--device"), (["--claims", "/nowhere.yaml"], "--claims")])
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], match: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["figures", "spectra", str(tmp_path), "-o", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {match}") and not (tmp_path / "o").exists()


def test_full_ft_summaries_only_is_nothing_to_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "sweep" / "full"
    snapshot_run(d / "snapshots", "full")
    rec = RunRecord(d)
    rec.start(method="full", seed=0, task="sst2", model="tiny_bert", total_steps=6, config={})
    rec.done()
    assert main(["figures", "spectra", str(tmp_path / "sweep"), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "snapshot.full_weights" in err and "no measurable snapshots" in err


def test_logged_to_wandb_offline(tmp_path: Path, fake_stats: list, one_thread: None) -> None:  # noqa: F811
    make_sweep(tmp_path / "sweep", seeds=(0,), configs=CONFIGS[:2], wandb=True)
    out = tmp_path / "out"
    assert main(["figures", "spectra", str(tmp_path / "sweep"), "-o", str(out), "--device", "cpu", "--wandb", "auto"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("*.png")) and list(runs[0].rglob("*.table.json"))
    assert b"figures-spectra-sweep" in next(runs[0].glob("*.wandb")).read_bytes()  # named for the sweep's group
