"""Sweeps that survive: a failing job (NaN loss, exception) is recorded and the others finish; re-running the
same command skips what is done and redoes only what failed; train.force=true redoes everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.__main__ import main
from tests.conftest import TINY

# one key swept over three values; lr=1e30 without clipping diverges at step 2
SWEEP = ["-m", *TINY, "snapshot=none", "train.max_grad_norm=0", "method.lr=5e-4,1e30,1e-3"]


def records(sweep_dir: Path, key: str = "lr") -> dict[str, dict[str, Any]]:
    """run.json of every job folder (with its folder as ``_dir``), by the job's lr (or method)."""
    out = {}
    for f in sweep_dir.glob("*/run.json"):
        rec = json.loads(f.read_text())
        rec["_dir"] = f.parent
        out[str(rec["config"]["method"]["lr"]) if key == "lr" else rec["method"]] = rec
    return out


def only_sweep_dir(root: Path) -> Path:
    dirs = [p for p in (root / "outputs" / "multirun").iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_failing_job_does_not_stop_the_sweep_and_rerun_redoes_only_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # default folders: outputs/multirun/<preset>_<hash> under here
    assert main(SWEEP) == 1
    err = capsys.readouterr().err
    sweep_dir = only_sweep_dir(tmp_path)
    assert sweep_dir.name.startswith("sweep_")  # not a timestamp: the same command finds it again
    recs = records(sweep_dir)
    assert {k: r["status"] for k, r in recs.items()} == {"0.0005": "done", "1e+30": "failed", "0.001": "done"}
    assert "diverged" in recs["1e+30"]["error"] and "not finite at step 2" in recs["1e+30"]["error"]
    assert "RunFailed" in (recs["1e+30"]["_dir"] / "error.txt").read_text()  # the traceback is kept there
    failed_lines = [ln for ln in err.splitlines() if ln.startswith("failed: ")]
    assert len(failed_lines) == 1 and "diverged" in failed_lines[0] and "Traceback" not in err

    # the same command again: done jobs skipped (records untouched), the failed one runs again
    assert main(SWEEP) == 1
    assert only_sweep_dir(tmp_path) == sweep_dir
    again = records(sweep_dir)
    for lr in ("0.0005", "0.001"):
        assert again[lr] == recs[lr]  # not even rewritten
    assert again["1e+30"]["attempt"] == 2 and again["1e+30"]["status"] == "failed"
    assert again["1e+30"]["attempts"][0]["status"] == "failed"

    # train.force=true: everything runs again, in the same folders (force does not change a config hash)
    assert main([*SWEEP, "train.force=true"]) == 1
    assert only_sweep_dir(tmp_path) == sweep_dir
    forced = records(sweep_dir)
    assert {k: r["attempt"] for k, r in forced.items()} == {"0.0005": 2, "1e+30": 3, "0.001": 2}


def test_an_exception_in_one_job_is_recorded_and_the_others_finish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import harness.loop as loop

    orig = loop.evaluate

    def flaky(model: Any, enc: Any, **kw: Any) -> dict[str, float]:
        if getattr(next(iter(model.peft_config.values())), "use_dora", False):  # the DoRA job breaks
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        return orig(model, enc, **kw)

    monkeypatch.setattr(loop, "evaluate", flaky)
    args = ["-m", *TINY, "snapshot=none", "method=lora,dora", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert main(args) == 1
    recs = records(tmp_path / "sweep", key="method")
    assert recs["lora"]["status"] == "done"
    assert recs["dora"]["status"] == "failed" and "illegal memory access" in recs["dora"]["error"]
    assert "RuntimeError" in (recs["dora"]["_dir"] / "error.txt").read_text()
    err = capsys.readouterr().err
    assert [ln.split(":")[0] for ln in err.splitlines() if ln.startswith(("failed", "error"))] == ["failed"]


def test_a_grown_grid_finds_the_folders_of_its_earlier_jobs(tmp_path: Path) -> None:
    """lr=1e-3, then lr=5e-4,1e-3 in the same sweep folder: the lr=1e-3 job is now job 1 but goes to its old folder
    and is skipped; the new job 0, whose default name is taken by another configuration, gets a folder beside it."""
    base = ["-m", *TINY, "snapshot=none", f"hydra.sweep.dir={tmp_path}"]
    assert main([*base, "method.lr=1e-3"]) == 0
    first = json.loads((tmp_path / "0_lora_b8_sst2_s0" / "run.json").read_text())
    assert main([*base, "method.lr=5e-4,1e-3"]) == 0
    assert json.loads((tmp_path / "0_lora_b8_sst2_s0" / "run.json").read_text()) == first  # skipped, untouched
    recs = records(tmp_path)
    assert set(recs) == {"0.0005", "0.001"} and all(r["status"] == "done" for r in recs.values())
    assert recs["0.0005"]["_dir"].name == f"0_lora_b8_sst2_s0_{recs['0.0005']['config_hash'][:8]}"
    assert not (tmp_path / "1_lora_b8_sst2_s0").exists()
