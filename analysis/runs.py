"""``python -m analysis runs FOLDER…``: a row per run folder at or below the folders — status, steps (done /
total), method, task, budget, seed, the main metric, age — whatever its status (running, replacing, crashed,
failed, done); a run whose record is damaged is listed ``unreadable``, with one warning line naming the file
and the key."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.load import find_runs
from analysis.table import BadOption
from harness.record import METRICS_FILE, BadRecord, metrics_row, read_run, read_summary, recorded_budget

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``runs``."""
    p.add_argument("folders", nargs="+", help="run folders, sweep folders or any folder above them (outputs/)")
    p.add_argument("--format", dest="fmt", choices=["text", "csv"], default="text",
                   help="text: an aligned table (default); csv: for other tools")


def age(seconds: float) -> str:
    """``seconds`` as a short age: 45s, 12m, 3h, 5d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def last_logged_step(run_dir: Path) -> int:
    """The last step of the run's metrics.jsonl (0 when it has none yet; unreadable lines, such as a line torn
    by a kill, are passed over)."""
    last = 0
    try:
        with open(run_dir / METRICS_FILE, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    last = max(last, int(metrics_row(line)["step"]))
                except ValueError:
                    continue
    except OSError:
        return 0
    return last


def run_rows(folders: list[str], *, now: float | None = None) -> pd.DataFrame:
    """One row per run folder (sorted by folder): status, steps (done: summary.json's ``steps`` for a finished
    run, else the last step logged in metrics.jsonl), total_steps (run.json's), method, task, budget, seed,
    metric, value, age, folder. An unreadable run.json gives status ``unreadable``."""
    now = time.time() if now is None else now
    rows = []
    for run_dir in find_runs(folders):
        row: dict[str, Any] = {"status": "unreadable", "steps": None, "total_steps": None, "method": None,
                               "task": None, "budget": None, "seed": None, "metric": None, "value": None,
                               "age": None, "folder": str(run_dir)}
        try:
            rec = read_run(run_dir)
        except (OSError, BadRecord) as e:
            log.warning("%s; listed as unreadable", e)
            rows.append(row)
            continue
        method_cfg = rec.get("config", {}).get("method", {})
        row.update(status=rec.get("status", "unknown"), method=rec.get("method", method_cfg.get("name")),
                   task=rec.get("task"), budget=recorded_budget(rec), seed=rec.get("seed"),
                   total_steps=rec.get("total_steps"))
        when = rec.get("ended") or rec.get("restarted") or rec.get("started")
        if isinstance(when, (int, float)) and math.isfinite(when):
            row["age"] = age(now - when)
        summary: dict[str, Any] = {}
        try:
            summary = read_summary(run_dir)
            row.update(metric=summary.get("main_metric"), value=summary.get("main_metric_value"))
        except (OSError, BadRecord) as e:
            log.warning("%s; no metric shown", e)
        row["steps"] = summary["steps"] if summary.get("steps") is not None else last_logged_step(run_dir)
        rows.append(row)
    ints = {c: "Int64" for c in ("steps", "total_steps", "budget", "seed")}
    return pd.DataFrame(rows).astype(ints) if rows else pd.DataFrame()


def steps_text(done: Any, total: Any) -> str:
    """``150/300``; ``150/?`` without a recorded total; empty when nothing is known."""
    if done is None or pd.isna(done):
        return ""
    return f"{int(done)}/{'?' if total is None or pd.isna(total) else int(total)}"


def main(args: argparse.Namespace) -> int:
    """Print the table; exit 2 when a folder holds no run."""
    table = run_rows(args.folders)
    if table.empty:
        raise BadOption(f"{' '.join(args.folders)}: no run folder (one holding run.json) at or below it; pass a run "
                        f"or sweep folder, e.g. outputs/multirun/<sweep>")
    if args.fmt == "csv":
        print(table.to_csv(index=False), end="")
        return 0
    text = lambda fmt: (lambda v: "" if v is None or pd.isna(v) else fmt(v))  # noqa: E731
    shown = table.assign(steps=[steps_text(d, t) for d, t in zip(table["steps"], table["total_steps"])],
                         value=table["value"].map(text(lambda v: f"{v:.4f}")),
                         budget=table["budget"].map(text(lambda v: str(int(v)))),
                         seed=table["seed"].map(text(lambda v: str(int(v)))))
    print(shown.drop(columns="total_steps").fillna("").to_string(index=False))
    counts = table["status"].value_counts()
    print(f"{len(table)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
