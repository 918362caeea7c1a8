"""The CLI gets what it prints and its exit status as return values (no module state): several commands in one
process each report their own jobs, summary and status."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.__main__ import main
from harness.app import run_hydra
from harness.sweeper import SweepOutcome
from tests.conftest import TINY

BASE = [*TINY, "snapshot=none", "train.max_grad_norm=0"]  # lr=1e30 without clipping diverges at step 2


def test_two_sweeps_back_to_back_report_their_own_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["-m", *BASE, "method.lr=5e-4,1e30", f"hydra.sweep.dir={first}"]) == 1
    out1, err1 = capsys.readouterr()
    assert f"# Sweep {first}" in out1 and "2 jobs: 1 done, 1 failed" in out1
    assert [ln for ln in err1.splitlines() if ln.startswith("failed: ")][0].startswith(f"failed: {first}/")

    assert main(["-m", *BASE, "method.lr=5e-4,1e-3,2e-3", f"hydra.sweep.dir={second}"]) == 0
    out2, err2 = capsys.readouterr()
    assert f"# Sweep {second}" in out2 and "3 jobs: 3 done" in out2
    assert str(first) not in out2 and "failed" not in err2
    assert (second / "summary.md").read_text().strip() in out2  # printed as written


def test_a_run_after_a_dry_run_and_a_bad_sweep_in_one_process(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    assert main(["--dry-run", "-m", *BASE, "method=lora,dora", f"hydra.sweep.dir={sweep}"]) == 0
    assert "2 job(s): 2 run; nothing was written" in capsys.readouterr().out and not sweep.exists()
    assert main(["-m", *BASE, "train.lr=-1", f"hydra.sweep.dir={sweep}"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main([*BASE, "train.lr=-1", f"hydra.run.dir={tmp_path / 'bad'}"]) == 2  # a single run's bad input
    assert capsys.readouterr().err.startswith("error: train.lr")
    assert main([*BASE, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert f"folder      {tmp_path / 'run'}" in out and "Sweep" not in out


def test_hydra_returns_the_jobs_outcomes(tmp_path: Path) -> None:
    """A run returns :func:`harness.app.job`'s dict, a sweep a :class:`SweepOutcome` built from its jobs'."""
    one = run_hydra([*BASE, f"hydra.run.dir={tmp_path / 'run'}"])
    assert one.mode == "run" and one.value["status"] == "done" and one.value["run_dir"] == str(tmp_path / "run")
    many = run_hydra(["-m", *BASE, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert many.mode == "multirun" and isinstance(many.value, SweepOutcome)
    assert [j["status"] for j in many.value.jobs] == ["done", "done"]
    assert many.value.summary == (tmp_path / "sweep" / "summary.md").read_text()
    assert run_hydra(["--cfg", "job", *BASE]).mode == "info"
