"""What a run and a sweep say when they end (docs/output.md): the run block, the sweep table with summary.md /
summary.csv, and no library chatter on stderr."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.summaries import run_block, write_sweep_summary
from tests.conftest import GLUE, ROOT, TINY

CHATTER = ("not sharded", "LOAD REPORT", "Loading weights", "invalid shape")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLUE_DIR": str(GLUE)}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


def test_adalora_run_ends_with_block_and_no_chatter(tmp_path: Path) -> None:
    """budget=1 with masking every step prunes some matrices to rank 0: PEFT's zero-size warning is silenced and
    the block explains rank 0 instead."""
    r = cli(*TINY, "snapshot=none", "method=adalora", "method.deltaT=1", "budget=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    block = r.stdout[r.stdout.index("--- run"):].splitlines()
    assert block[1].split() == ["status", "done"]
    assert block[2].split() == ["folder", str(tmp_path)]
    assert block[3].startswith("accuracy") and "final dev" in block[3]
    assert any("best on dev (no validation split)" in ln for ln in block)
    assert f"saved       {tmp_path / 'adapter'}" in block
    assert any(ln.startswith("train time") and "tokens/s" in ln for ln in block)
    zero = json.loads((tmp_path / "summary.json").read_text())["adalora/zero_rank_matrices"]
    assert zero > 0 and any(ln.startswith(f"rank 0      {zero} of 12 matrices") for ln in block)
    for text in CHATTER:
        assert text not in r.stderr, r.stderr[-3000:]


@pytest.mark.slow
def test_minilm_loading_is_quiet_unless_verbose(tmp_path: Path) -> None:
    """The pretrained path is the one where transformers talks ("not sharded", the weight-loading bar)."""
    args = [*TINY, "model=minilm", "snapshot=none", "train.max_steps=1", "train.eval_every=1"]
    r = cli(*args, f"hydra.run.dir={tmp_path / 'quiet'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(text in r.stderr for text in CHATTER), r.stderr[-3000:]
    loud = cli(*args, "train.verbose=true", f"hydra.run.dir={tmp_path / 'loud'}")
    assert loud.returncode == 0 and "not sharded" in loud.stderr


def test_sweep_writes_summary_with_failed_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two jobs, one diverging: the table has both (done / failed with its reason), summary.md and summary.csv
    hold it, the next commands follow; run again, the done job reads 'skipped: done before'."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "snapshot=none", "train.max_grad_norm=0", "method.lr=5e-4,1e30",
            f"hydra.sweep.dir={sweep_dir}"]
    assert main(args) == 1
    out = capsys.readouterr().out
    md = (sweep_dir / "summary.md").read_text()
    assert md.rstrip() in out
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert float(rows[0]["final"]) >= 0 and rows[1]["final"] == "" and "diverged" in rows[1]["error"]
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 3 and "| done " in table[1] and "| failed " in table[2]
    assert "diverged" in md and "error.txt" in md
    assert "- sst2: lora budget 8 (final " in md and "on the reported dev set — not a fair selection" in md
    assert "one seed: no interval, descriptive" in md
    assert f"python -m analysis table {sweep_dir}" in md
    assert f"python -m analysis report {sweep_dir} -o {sweep_dir}/report" in md
    assert "wandb sync" not in md  # tracking=none

    assert main(args) == 1
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["skipped: done before", "failed"]


def _fake_run(d: Path, status: str, summary: dict | None = None, **config: object) -> None:
    d.mkdir(parents=True)
    cfg = {"method": {"name": "lora", "r": 8}, "task": {"name": "rte"}, "seed": 0, "budget": 8,
           "train": {"lr_scale": 1.0}}  # a record written before run.json held the budget: read from method.r
    cfg.update(config)
    (d / "run.json").write_text(json.dumps({"status": status, "config": cfg}))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))


def _summary(value: float, best: float, **kw: object) -> dict:
    return {"method": "lora", "task": "rte", "seed": 0, "main_metric": "accuracy", "main_metric_value": value,
            "best/accuracy": best, "valid/accuracy": best + 0.01, "best_selected_on": "validation", "best_step": 10,
            "wall_seconds": 75.0, **kw}


def test_selection_stages_running_job_and_validation_based_best(tmp_path: Path) -> None:
    """A compare-style sweep dir: stage-1 candidates are marked and left out of the best configuration, which
    uses best/ (all runs selected on validation); a job whose folder another process runs reads skipped: running."""
    runs = {name: tmp_path / name for name in ("0_c05", "1_c1", "2_s1", "3_busy")}
    _fake_run(runs["0_c05"], "done", _summary(0.9, 0.95, lr_scale=0.5))
    _fake_run(runs["1_c1"], "done", _summary(0.6, 0.61, lr_scale=1.0))
    _fake_run(runs["2_s1"], "done", _summary(0.7, 0.72, lr_scale=1.0, seed=1), seed=1)
    _fake_run(runs["3_busy"], "running", None, seed=2)
    (tmp_path / "selection.json").write_text(json.dumps({"points": [{
        "chosen": 1.0, "candidates": [{"value": 0.5, "run_dir": str(runs["0_c05"])},
                                      {"value": 1.0, "run_dir": str(runs["1_c1"])}],
        "stage2": [{"run_dir": str(runs["1_c1"])}, {"run_dir": str(runs["2_s1"])}]}]}))
    (runs["2_s1"] / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    results = [{"status": "done", "run_dir": str(runs[n])} for n in ("0_c05", "1_c1", "2_s1")]
    results.append({"status": "invalid", "run_dir": str(runs["3_busy"]), "error": "process 7 is running this run"})
    md = write_sweep_summary(tmp_path, results)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["stage"] for r in rows] == ["1: candidate", "1+2: chosen", "2", ""]
    assert rows[3]["status"] == "skipped: running"
    # 0.5 would win on its candidate run; stage 2 (lr_scale 1: validation 0.62, 0.73; dev 0.6, 0.7) decides
    assert ("- rte: lora budget 8 (valid 0.6750, dev 0.6500) — chosen on the validation split; one seed: no "
            "interval, descriptive" not in md)  # two seeds: an interval, the top one is a set of one
    assert "- rte: lora budget 8 (valid 0.6750, dev 0.6500) — chosen on the validation split; every configuration" in md
    assert "validation − dev gap +0.0250 over 2 runs" in md
    assert "1m15s" in md and "stage-1 selection candidates" in md
    assert f"wandb sync {tmp_path}/*/wandb/offline-run-*" in md


def test_failed_run_block(tmp_path: Path) -> None:
    (tmp_path / "error.txt").write_text("Traceback ...")
    text = run_block({"status": "failed", "run_dir": str(tmp_path), "error": "RunFailed: loss diverged"})
    assert text.splitlines()[1:] == ["status     failed", f"folder     {tmp_path}",
                                     "reason     RunFailed: loss diverged", f"traceback  {tmp_path / 'error.txt'}"]


def _row(method: str, seed: int, valid: float | None, final: float, lr_scale: float = 1.0) -> dict:
    return {"task": "rte", "method": method, "budget": 8, "lr_scale": lr_scale, "seed": seed, "stage": "",
            "final": final, "valid": valid, "main_metric": "accuracy"}


def test_best_is_chosen_on_validation_and_is_a_set_when_intervals_overlap() -> None:
    """dev would crown 'dora' (0.80 vs 0.70), validation picks 'lora'; 'dora' overlaps 'lora' on validation
    (both in the set), 'full' is far below (left out)."""
    from harness.summaries import best_per_task

    rows = [_row("lora", s, v, 0.70) for s, v in enumerate((0.80, 0.82, 0.84))]
    rows += [_row("dora", s, v, 0.80) for s, v in enumerate((0.78, 0.81, 0.83))]
    rows += [_row("full", s, v, 0.60) for s, v in enumerate((0.50, 0.51, 0.52))]
    (line,) = best_per_task(rows)
    assert line.startswith("- rte: lora budget 8 (valid 0.8200, dev 0.7000); dora budget 8 (valid 0.8067, dev 0.8000)")
    assert "full" not in line and "chosen on the validation split" in line
    (dev_line,) = best_per_task([{**r, "valid": None} for r in rows])
    assert dev_line.startswith("- rte: dora budget 8 (final 0.8000)") and "not a fair selection" in dev_line


def test_run_block_names_the_offline_wandb_run_and_its_sync_line(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(_summary(0.7, 0.7, steps=10, train_seconds=3.0)))
    run = tmp_path / "wandb" / "offline-run-20261207_000000-abc"
    run.mkdir(parents=True)
    lines = run_block({"status": "done", "run_dir": str(tmp_path)}).splitlines()
    assert lines[-2].split() == ["W&B", str(run), "(offline)"] and lines[-1].split() == ["wandb", "sync", str(run)]
    (tmp_path / "wandb" / "offline-run-20261207_000000-abc").rmdir()
    assert "wandb sync" not in run_block({"status": "done", "run_dir": str(tmp_path)})


def test_sweep_end_writes_the_overview_figure_beside_the_summary(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.png (analysis.overview) next to summary.md, named in it; a figure that cannot be drawn is one
    warning and the summary is still written."""
    from tests.analysis.test_compare import make_sweep

    sweep = make_sweep(tmp_path, failed=False)
    results = [{"status": "done", "run_dir": str(d)} for d in sorted(p for p in sweep.iterdir() if p.is_dir())]
    md = write_sweep_summary(sweep, results)
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Figure: {sweep / 'summary.png'} (metric per configuration" in md

    import analysis.overview

    def broken(sweep_dir: Path) -> None:
        raise ValueError("no axes")

    monkeypatch.setattr(analysis.overview, "write_overview", broken)
    (sweep / "summary.png").unlink()
    md = write_sweep_summary(sweep, results)
    assert "Figure:" not in md and (sweep / "summary.md").is_file() and not (sweep / "summary.png").exists()
