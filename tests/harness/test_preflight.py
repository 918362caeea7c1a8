"""Offline without data: the CLI fails with one line naming GLUE_DIR and how to make that folder, before it
imports torch, transformers or PEFT (harness/preflight.py, harness/glue.py; issue 29). The wall time of that
failure is measured by benchmarks/bench_preflight.py, not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.preflight import data_problem
from tests.conftest import GLUE, ROOT

HEAVY = ("torch", "transformers", "peft", "datasets")


def _offline_cli(args: list[str], glue_dir: str | None) -> subprocess.CompletedProcess[str]:
    """``python -X importtime -m harness ARGS`` offline, with ``GLUE_DIR`` set to ``glue_dir`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", "HF_ENDPOINT")}
    env["HF_HUB_OFFLINE"] = "1"
    if glue_dir is not None:
        env["GLUE_DIR"] = glue_dir
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def _imported(stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` lines."""
    return {ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in stderr.splitlines() if ln.startswith("import time:")
            and "|" in ln}


def _message(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("import time:")]


@pytest.mark.parametrize("args", [[], ["-m", "sweep"]], ids=["run", "sweep"])
@pytest.mark.parametrize("glue", ["missing", "unset"])
def test_offline_without_data_fails_in_one_line_before_torch(args: list[str], glue: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    where = "hydra.sweep.dir" if args else "hydra.run.dir"
    r = _offline_cli([*args, f"{where}={out}"], str(tmp_path / "no-glue") if glue == "missing" else None)
    lines = _message(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error:") and "GLUE_DIR" in lines[0] and "download_glue_data.py" in lines[0], lines
    assert "SST-2/train.tsv" in lines[0] and (glue == "unset" or str(tmp_path / "no-glue") in lines[0]), lines
    imported = _imported(r.stderr)
    assert "harness" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert not out.exists()  # nothing written


def test_every_task_of_a_sweep_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_problem(["-m", "experiment=compare"]) is None  # five tasks, all in $GLUE_DIR
    assert data_problem(["-m", "experiment=sweep", "task=sst2,rte"]) is None
    why = data_problem(["-m", "experiment=sweep", f"task.glue_dir={GLUE},{tmp_path / 'gone'}"])
    assert why is not None and why.startswith(f"{tmp_path / 'gone'}: GLUE folder not found"), why
    monkeypatch.delenv("GLUE_DIR")
    why = data_problem(["-m", "experiment=compare", "task=rte"])  # the command line wins over the preset's tasks
    assert why is not None and why.startswith("task rte: no GLUE folder given") and "RTE/dev.tsv" in why, why
    assert data_problem(["-m", "experiment=compare", f"task.glue_dir={GLUE}"]) is None


def test_leaves_what_it_cannot_judge_to_the_full_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLUE_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_problem(["task=custom", "task.train_file=a.csv", "task.dev_file=b.csv"]) is None
    assert data_problem(["task=gsm_symbolic", "model=smollm2"]) is None  # reasoning-gym: generated, not GLUE
    assert data_problem(["task=sst2,rte"]) is None  # a sweep without -m: Hydra's error, not ours
    assert data_problem(["task=nosuchtask"]) is None  # cannot compose: the full path names the options
    assert data_problem(["--cfg", "job"]) is None  # prints the config, reads no data
    assert data_problem([]) is not None


def test_online_path_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hub reachable and ``datasets`` importable, the check lets the run go on to HF ``datasets``."""
    import socket

    class Conn:
        def close(self) -> None:
            pass

    for var in ("GLUE_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", object())  # type: ignore[arg-type]
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Conn())
    assert data_problem(["-m", "experiment=sweep"]) is None
