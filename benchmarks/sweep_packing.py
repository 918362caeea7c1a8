"""Benchmark: the default sweep on a GPU, packed (hydra/launcher=packed, auto) vs one job at a time.

    python benchmarks/sweep_packing.py --out benchmarks/results/sweep_packing_h200.json \
        [--sequential hydra.sweeper.params.seed=0 ...] [-- extra Hydra overrides for both]

Runs ``python -m harness -m sweep`` twice into fresh sweep folders: packed (``jobs_per_gpu=auto``) and
sequential (``jobs_per_gpu=1``; ``--sequential`` overrides may run a subset to save time, e.g. seed 0 at
budget 8: throughput is compared as runs per minute). While each runs, ``nvidia-smi`` samples GPU utilisation and memory every
second. Writes wall seconds, runs, runs/min, mean/median GPU utilisation, peak memory, the speed-up, and
every run's dev accuracy (packed and sequential runs of one configuration must agree up to GPU
nondeterminism).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def sample_gpu(stop: threading.Event, out: list[tuple[float, float, float]]) -> None:
    """Append (time, utilisation %, memory used MiB) every second until ``stop`` is set."""
    while not stop.is_set():
        try:
            line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=10).stdout.splitlines()[0]
            util, mem = (float(x) for x in line.split(","))
            out.append((time.time(), util, mem))
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
        stop.wait(1.0)


def run_sweep(sweep_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One sweep with GPU sampling; its wall time, GPU statistics and per-run results."""
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()
    t = threading.Thread(target=sample_gpu, args=(stop, samples), daemon=True)
    t.start()
    t0 = time.time()
    cmd = [sys.executable, "-m", "harness", "-m", "sweep", "tracking=none", "train.progress=false",
           f"hydra.sweep.dir={sweep_dir}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    t.join()
    runs = []
    for s in sorted(sweep_dir.glob("*/summary.json")):
        d = json.loads(s.read_text())
        runs.append({"run": s.parent.name, "method": d["method"], "seed": d["seed"],
                     "accuracy": d.get("eval/accuracy"), "train_seconds": d.get("train_seconds")})
    utils = [u for _, u, _ in samples]
    return {"command": " ".join(cmd), "returncode": proc.returncode, "wall_seconds": wall, "runs": len(runs),
            "runs_per_minute": 60 * len(runs) / wall if wall > 0 else None,
            "gpu_util_mean": statistics.fmean(utils) if utils else None,
            "gpu_util_median": statistics.median(utils) if utils else None,
            "gpu_memory_peak_mib": max((m for _, _, m in samples), default=None),
            "per_run": runs, "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON report")
    p.add_argument("--sequential", action="append", default=[], metavar="OVERRIDE",
                   help="an override for the sequential sweep only (repeatable), e.g. hydra.sweeper.params.seed=0")
    p.add_argument("--root", type=Path, default=None, help="where the two sweep folders go (default: a temp dir)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sweeps (after --)")
    a = p.parse_args(argv)
    root = a.root or Path(tempfile.mkdtemp(prefix="sweep-packing-"))
    report: dict[str, Any] = {"host": os.uname().nodename, "overrides": a.overrides}
    report["packed"] = run_sweep(root / "packed", ["hydra.launcher.jobs_per_gpu=auto", *a.overrides])
    report["sequential"] = run_sweep(root / "sequential", ["hydra.launcher.jobs_per_gpu=1", *a.overrides, *a.sequential])
    pk, sq = report["packed"]["runs_per_minute"], report["sequential"]["runs_per_minute"]
    report["throughput_ratio"] = pk / sq if pk and sq else None
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("throughput_ratio",)}
                     | {f"{m}_{k}": report[m][k] for m in ("packed", "sequential")
                        for k in ("wall_seconds", "runs", "runs_per_minute", "gpu_util_mean", "returncode")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
