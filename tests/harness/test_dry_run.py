"""``--dry-run``: the run or the sweep's jobs with their folders and actions (run / skip / resume), nothing
written; bad input exits 2 with one line as a real run does."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.run import run
from tests.conftest import TINY, compose_cfg
from tests.harness.test_cli import cli


def files_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_sweep_dry_run_lists_jobs_and_writes_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run(compose_cfg([*TINY, "method=lora", "snapshot=none"]), sweep / "0_lora_b8_sst2_s0")  # done before
    before = files_under(tmp_path)
    r = cli("--dry-run", "-m", *TINY, "snapshot=none", "method=lora,dora", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    lora = next(ln for ln in lines if "lora-b8-sst2-s0" in ln and "dora" not in ln)
    dora = next(ln for ln in lines if "dora-b8-sst2-s0" in ln)
    assert "skip (done)" in lora and str(sweep / "0_lora_b8_sst2_s0") in lora
    assert " run " in dora and str(sweep / "1_dora_b8_sst2_s0") in dora
    assert "2 job(s): 1 skip, 1 run; nothing was written" in lines[-1]
    assert files_under(tmp_path) == before


def test_single_dry_run_writes_nothing(tmp_path: Path) -> None:
    r = cli("--dry-run", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "lora-b8-sst2-s0" in r.stdout and str(tmp_path / "run") in r.stdout
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(("args", "expect"), [
    (["method.r=0"], "method.r: must be a positive integer"),
    (["--cfg", "job"], "--dry-run: cannot be combined with --cfg"),
    (["-m", "method=lora,lorax"], "method=lorax"),
])
def test_dry_run_bad_input_exits_2(args: list[str], expect: str, tmp_path: Path) -> None:
    r = cli("--dry-run", *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 's'}")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and expect in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and files_under(tmp_path) == []


def test_actions_from_the_folder_record(tmp_path: Path) -> None:
    """describe() reads the folder's record as a real run would: another configuration → blocked, a failed
    attempt without a checkpoint → run again, nothing → run; the folder is only read."""
    import json

    from harness.config import config_hash
    from harness.dry_run import describe
    from harness.run import plan

    job = compose_cfg([*TINY, "method=lora", "snapshot=none"])
    h = config_hash(plan(job).cfg)
    assert describe(job, tmp_path / "new", name="x")["action"] == "run"
    for name, status, hash_, expect in (("other", "done", "0" * 16, "blocked: "), ("failed", "failed", h, "run again")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": status, "config_hash": hash_, "host": "x"}))
        before = files_under(tmp_path)
        row = describe(job, tmp_path / name, name="x")
        assert row["action"].startswith(expect) and row["folder"] == str(tmp_path / name)
        assert files_under(tmp_path) == before
