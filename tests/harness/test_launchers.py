"""Sweeps through real Hydra launchers: submitit (the SLURM engine, locally) and joblib (parallel processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GLUE, ROOT

TINY = ["model=tiny_bert", "tracking=none", "train.max_steps=4", "train.eval_every=2", "task.max_train_samples=32",
        "task.max_eval_samples=16", "train.progress=false", "train.batch_size=4", "snapshot.enabled=false"]


def sweep(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLUE_DIR": str(GLUE)}
    return subprocess.run([sys.executable, "-m", "harness", "-m", *args, *TINY], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


@pytest.mark.slow
def test_submitit_local_four_jobs(tmp_path: Path) -> None:
    r = sweep("hydra/launcher=submitit_local", "method=lora,dora", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(tmp_path.glob("*/run.json"))
    assert len(runs) == 4
    recs = [json.loads(p.read_text()) for p in runs]
    assert all(x["status"] == "done" for x in recs)
    assert sorted((x["method"], x["seed"]) for x in recs) == [("dora", 0), ("dora", 1), ("lora", 0), ("lora", 1)]
    assert len({x["pid"] for x in recs}) == 4  # each job in its own process
    assert (tmp_path / ".submitit").is_dir()


@pytest.mark.slow
def test_joblib_parallel_jobs(tmp_path: Path) -> None:
    r = sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=lora", "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in tmp_path.glob("*/run.json")]
    assert len(recs) == 2 and all(x["status"] == "done" for x in recs)
