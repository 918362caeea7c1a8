"""Benchmark: the weight-analysis suite (:func:`analysis.spectra.compute`: batched torch, low-rank SVD path, W0's
SVD once per matrix) against a plain per-matrix numpy loop computing the same measures on the same snapshots.

    python -m benchmarks.bench_spectra outputs/multirun/<sweep>                      # the suite on CUDA when present
    python -m benchmarks.bench_spectra <sweep> --device cpu --threads 1 --out benchmarks/results/spectra_cpu.json

The loop rebuilds each merged weight (``RunSnapshots.merged_weight``), takes ``np.linalg.svd`` of W0, W and ΔW
one matrix at a time and computes the measures from them (as a one-off analysis script would). Both read the
same files (checksums verified); the suite's first pass is timed as it comes (files cached by neither). The
values of both are compared (max relative difference printed). Prints a Markdown line and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis import spectra as SP
from analysis.decomposition import SnapshotError, open_snapshots
from harness.snapshot_format import DENSE

log = logging.getLogger(__name__)


def numpy_measures(w0: np.ndarray, w: np.ndarray, s: SP.Settings) -> dict[str, float]:
    """The suite's measures of one matrix with three dense numpy SVDs."""
    u0, _, v0t = np.linalg.svd(w0, full_matrices=False)
    uw = np.linalg.svd(w, full_matrices=False)[0]
    delta = w - w0
    u, sig, vt = np.linalg.svd(delta, full_matrices=False)
    e = sig**2
    total = e.sum()
    rank = int((sig > sig[0] * max(w.shape) * np.finfo(np.float32).eps).sum())
    r = min(s.top_r, rank)
    return {"intruders": int((np.abs(uw[:, :s.top_k].T @ u0).max(axis=1) < s.epsilon).sum()),
            "effective_rank": int(np.searchsorted(np.cumsum(e), s.energy * total) + 1) if total > 0 else 0,
            "stable_rank": float(total / e[0]) if e[0] > 0 else 0.0,
            "amplification": float(np.sqrt(total) / np.linalg.norm(u[:, :r].T @ w0 @ vt[:r].T)),
            "w0_alignment": float(np.linalg.norm(u0[:, :s.top_r].T @ delta @ v0t[:s.top_r].T) ** 2 / total),
            "dW_rank": rank, "dW_fro": float(np.sqrt(total))}


def numpy_loop(runs: pd.DataFrame, s: SP.Settings) -> pd.DataFrame:
    """The plain loop: one row per (run, step, matrix, measure)."""
    rows = []
    for run_dir in runs["run_dir"]:
        try:
            snaps = open_snapshots(run_dir)
        except SnapshotError:
            continue
        for step in (t for t in snaps.steps if t > 0):
            for name, info in snaps.matrices.iterrows():
                if info["form"] == DENSE and "W" not in snaps.tensors(step, name):
                    continue
                w0 = snaps.w0(name).double().numpy()
                values = numpy_measures(w0, snaps.merged_weight(name, step).numpy(), s)
                rows += [{"run_dir": run_dir, "step": step, "matrix": name, "measure": k, "value": v}
                         for k, v in values.items()]
    return pd.DataFrame(rows)


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Time both, compare their values, print and write the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run or sweep folders with snapshots")
    p.add_argument("--device", default="auto", help="the suite's device: auto (CUDA when present), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-numpy", action="store_true", help="time only the suite")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = SP.Settings(device=args.device)
    device = SP.device_for(args.device)
    runs, _ = SP.load_run_table(args.runs)
    if runs.empty:
        print(f"error: no finished runs under {' '.join(args.runs)}", file=sys.stderr)
        return 2
    res, t_suite = _timed(lambda: SP.compute(runs, settings), device)
    n = res.measures[["run_dir", "step", "matrix"]].drop_duplicates().shape[0]
    result: dict[str, Any] = {"runs": len(runs), "matrices": n, "suite_seconds": t_suite, "device": str(device),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "numpy": np.__version__, "platform": platform.platform(), "inputs": args.runs}
    if not args.skip_numpy:
        ref, t_np = _timed(lambda: numpy_loop(runs, settings), torch.device("cpu"))
        both = res.measures.merge(ref, on=["run_dir", "step", "matrix", "measure"], suffixes=("", "_np"))
        finite = both[np.isfinite(both["value_np"])]
        rel = ((finite["value"] - finite["value_np"]).abs() / finite["value_np"].abs().clip(lower=1e-12)).max()
        result.update(numpy_seconds=t_np, ratio=t_np / t_suite, max_rel_diff=float(rel), compared=len(finite))
    line = (f"| {result['runs']} runs | {n} matrix snapshots | suite {t_suite:.2f} s on {device} |"
            + (f" numpy loop {result['numpy_seconds']:.2f} s | ×{result['ratio']:.1f} | max rel. diff "
               f"{result['max_rel_diff']:.1e} |" if "ratio" in result else ""))
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
