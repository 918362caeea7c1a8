"""Benchmark: how long the CLI takes to fail offline without GLUE data (issue 29: at most 2 s).

    python -m benchmarks.bench_preflight [--repeat 5] [--baseline ../main] [--out benchmarks/results/preflight_cpu.json]

Runs ``python -m harness`` and ``python -m harness -m sweep`` with ``HF_HUB_OFFLINE=1`` and ``GLUE_DIR`` unset,
then pointing at a missing folder, ``--repeat`` times each, and reports the wall seconds of each (min, median,
max), the exit status and the one line printed; ``--baseline DIR`` times the same commands in another checkout
(e.g. the code before this check, which imported torch first) right after. Wall time depends on the machine's load: the test
(tests/harness/test_preflight.py) checks instead that torch, transformers and PEFT are never imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = {"run, GLUE_DIR unset": ([], None), "sweep, GLUE_DIR unset": (["-m", "sweep"], None),
         "run, GLUE_DIR missing": ([], "missing"), "sweep, GLUE_DIR missing": (["-m", "sweep"], "missing")}


def measure(args: list[str], glue: str | None, tmp: Path, root: Path = ROOT) -> dict[str, Any]:
    """One offline command's wall seconds, exit status and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", "HF_ENDPOINT")}
    env["HF_HUB_OFFLINE"] = "1"
    if glue is not None:
        env["GLUE_DIR"] = str(tmp / "no-such-glue")
    where = "hydra.sweep.dir" if args else "hydra.run.dir"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "harness", *args, f"{where}={tmp / 'out'}"], capture_output=True,
                       text=True, env=env, cwd=root, timeout=600)
    return {"seconds": time.perf_counter() - start, "rc": r.returncode, "stderr": r.stderr.strip()}


def cases(root: Path, repeat: int, tmp: Path, label: str) -> list[dict[str, Any]]:
    """Every case of :data:`CASES` ``repeat`` times in the checkout ``root``."""
    rows = []
    for name, (args, glue) in CASES.items():
        runs = [measure(args, glue, tmp, root) for _ in range(repeat)]
        secs = [r["seconds"] for r in runs]
        row = {"code": label, "case": name, "command": " ".join(["python -m harness", *args]), "min_s": min(secs),
               "median_s": statistics.median(secs), "max_s": max(secs), "rc": sorted({r["rc"] for r in runs}),
               "lines": sorted({len(r["stderr"].splitlines()) for r in runs}), "message": runs[0]["stderr"]}
        rows.append(row)
        print(f"{label:<9} {name:<24} rc {row['rc']}  {row['lines']} line(s)  wall min {row['min_s']:.2f} s, "
              f"median {row['median_s']:.2f} s, max {row['max_s']:.2f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time the same way")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as d:
        rows = cases(ROOT, a.repeat, Path(d), "this")
        base = cases(a.baseline.resolve(), a.repeat, Path(d), "baseline") if a.baseline is not None else []
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {"rows": rows, "baseline": base, "repeat": a.repeat, "cpu_count": os.cpu_count(),
              "loadavg_before": load_before, "loadavg_after": load,
              "ratio_median": [r["median_s"] / b["median_s"] for r, b in zip(rows, base)]}
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(r["rc"] == [2] and r["lines"] == [1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
