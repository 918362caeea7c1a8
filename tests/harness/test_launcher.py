"""The packed launcher: slot planning, GPU tokens under concurrency, packed jobs' records as when run alone."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.launcher import Slots, claim_token, job_costs, make_tokens, plan_slots
from harness.methods import METHODS

KW = dict(job_memory_gb=2.0, cpus_per_job=1.0, max_jobs_per_gpu=16, n_jobs=100)


def test_auto_packs_small_jobs_by_memory_and_cores() -> None:
    one = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={0: 140.0}, cpu_count=16, **KW)
    assert one.gpus == [0] and one.jobs_per_gpu == 16 and one.parallel == 16  # 16 cores, 70 by memory
    two = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={0: 140.0, 1: 140.0}, cpu_count=16, **KW)
    assert two.jobs_per_gpu == 8 and two.parallel == 16  # the cores are shared by both GPUs
    tight = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={0: 10.5}, cpu_count=64, **KW)
    assert tight.jobs_per_gpu == 5  # 10.5 GiB free / 2 GiB a job
    big = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={0: 80.0}, cpu_count=64,
                     **{**KW, "job_memory_gb": 30.0})
    assert big.jobs_per_gpu == 1  # a large model gets the GPU alone
    few = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={0: 140.0}, cpu_count=16, **{**KW, "n_jobs": 3})
    assert few.parallel == 3  # never more workers than jobs


def test_no_gpu_runs_one_job_at_a_time() -> None:
    s = plan_slots(jobs_per_gpu="auto", gpus="auto", free_gb={}, cpu_count=2, **KW)
    assert s == Slots([], 1, s.reason) and s.parallel == 1
    assert plan_slots(jobs_per_gpu=4, gpus=[], free_gb={0: 140.0}, cpu_count=16, **KW).parallel == 1


@pytest.mark.parametrize(("kw", "key"), [
    ({"jobs_per_gpu": 0}, "jobs_per_gpu"), ({"jobs_per_gpu": -2}, "jobs_per_gpu"),
    ({"jobs_per_gpu": 17}, "jobs_per_gpu"),  # above 16 cores
    ({"jobs_per_gpu": "many"}, "jobs_per_gpu"), ({"gpus": [3]}, "gpus"), ({"gpus": "all"}, "gpus"),
    ({"job_memory_gb": 0.0}, "job_memory_gb"), ({"cpus_per_job": float("nan")}, "cpus_per_job"),
])
def test_impossible_settings_name_the_key(kw: dict, key: str) -> None:
    args = {**KW, "jobs_per_gpu": "auto", "gpus": "auto", **kw}
    with pytest.raises(ConfigError, match=f"hydra.launcher.{key}"):
        plan_slots(free_gb={0: 140.0}, cpu_count=16, **args)


def test_every_gpu_gets_exactly_its_slots_under_concurrent_claims(tmp_path: Path) -> None:
    """Eight processes claim six tokens at once. Their answers come back through the pool's result (no queue
    read against a timeout: on a loaded machine the workers may take any time to start)."""
    make_tokens(tmp_path, Slots([0, 1], 3, "test"))
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        got = pool.map(claim_token, [tmp_path] * 8, chunksize=1)
    assert sorted(g for g in got if g is not None) == [0, 0, 0, 1, 1, 1] and got.count(None) == 2
    assert sorted(p.name.split(".")[0] for p in tmp_path.iterdir()) == ["0_0", "0_1", "0_2", "1_0", "1_1", "1_2"]


def test_costly_jobs_start_first() -> None:
    """Cost = steps × the method's step_cost; the sweep's own method and steps fill in what a job leaves out."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"method": {"name": "lora"}, "train": {"max_steps": 100}})
    jobs = [["method=full", "seed=0"], ["seed=1"], ["method=dora", "seed=0"], ["method=full", "train.max_steps=400"],
            ["+method=nonesuch"]]
    costs = job_costs(jobs, cfg)
    m = {k: METHODS[k].step_cost for k in ("full", "lora", "dora")}
    assert costs == pytest.approx([100 * m["full"], 100 * m["lora"], 100 * m["dora"], 400 * m["full"], 100.0])
    assert m["dora"] > m["lora"] > m["full"] == 1.0
    assert [i for i in sorted(range(len(jobs)), key=lambda i: -costs[i])][:2] == [3, 2]


def _sweep(tmp_path: Path, name: str, *extra: str) -> Path:
    d = tmp_path / name
    cmd = [sys.executable, "-m", "harness", "-m", "method=lora,dora,full", "model=tiny_bert", "train.max_steps=3",
           "train.eval_every=3", "tracking=none", "train.progress=false", "task.max_train_samples=64",
           "task.max_eval_samples=32", "snapshot.enabled=false", f"hydra.sweep.dir={d}", *extra]
    env = {**os.environ, "GLUE_DIR": os.environ.get("GLUE_DIR", str(Path(__file__).parents[3] / "shared/data/glue"))}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


def _records(sweep: Path) -> dict[str, list[dict]]:
    out = {}
    for run in sorted(p.parent for p in sweep.glob("*/run.json")):
        rec = json.loads((run / "run.json").read_text())
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out[rec["config_hash"]] = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]
    return out


@pytest.mark.slow
def test_packed_jobs_keep_the_records_of_jobs_run_alone(tmp_path: Path) -> None:
    """Two pretend GPUs, one job each at a time (on this CPU-only machine the jobs still train on the CPU):
    every job ran in a worker pinned with CUDA_VISIBLE_DEVICES, and its metrics equal the sequential run's."""
    alone = _records(_sweep(tmp_path, "alone", "hydra.launcher.gpus=[]"))
    packed_dir = _sweep(tmp_path, "packed", "hydra.launcher.gpus=[0,1]", "hydra.launcher.jobs_per_gpu=1")
    packed = _records(packed_dir)
    assert set(packed) == set(alone) and len(packed) == 3
    for h, rows in alone.items():
        assert [r.keys() for r in rows] == [r.keys() for r in packed[h]]
        for a, b in zip(rows, packed[h]):
            for k, v in a.items():
                assert b[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (h, k)
    pinned = [json.loads(p.read_text())["environment"].get("cuda_visible_devices")
              for p in packed_dir.glob("*/run.json")]
    assert sorted(pinned) in (["0", "0", "1"], ["0", "1", "1"])
    # started longest first (dora), but numbered and placed as the sweep lists them
    assert sorted(p.name for p in packed_dir.iterdir() if (p / "run.json").exists()) == sorted(
        p.name for p in (tmp_path / "alone").iterdir() if (p / "run.json").exists())
