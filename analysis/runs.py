"""``python -m analysis runs FOLDER…``: a row per run folder at or below the folders — status, method, task,
budget, seed, the main metric, age — whatever its status (running, replacing, crashed, failed, done); a run whose
record is damaged is listed ``unreadable``, with one warning line naming the file and the key."""

from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Any

import pandas as pd

from analysis.load import find_runs
from analysis.table import BadOption
from harness.record import BadRecord, read_run, read_summary, recorded_budget

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


def run_rows(folders: list[str], *, now: float | None = None) -> pd.DataFrame:
    """One row per run folder (sorted by folder): status, method, task, budget, seed, metric, value, age, folder.
    An unreadable run.json gives status ``unreadable``."""
    now = time.time() if now is None else now
    rows = []
    for run_dir in find_runs(folders):
        row: dict[str, Any] = {"status": "unreadable", "method": None, "task": None, "budget": None, "seed": None,
                               "metric": None, "value": None, "age": None, "folder": str(run_dir)}
        try:
            rec = read_run(run_dir)
        except (OSError, BadRecord) as e:
            log.warning("%s; listed as unreadable", e)
            rows.append(row)
            continue
        method_cfg = rec.get("config", {}).get("method", {})
        row.update(status=rec.get("status", "unknown"), method=rec.get("method", method_cfg.get("name")),
                   task=rec.get("task"), budget=recorded_budget(rec), seed=rec.get("seed"))
        when = rec.get("ended") or rec.get("restarted") or rec.get("started")
        if isinstance(when, (int, float)) and math.isfinite(when):
            row["age"] = age(now - when)
        try:
            summary = read_summary(run_dir)
            row.update(metric=summary.get("main_metric"), value=summary.get("main_metric_value"))
        except (OSError, BadRecord) as e:
            log.warning("%s; no metric shown", e)
        rows.append(row)
    return pd.DataFrame(rows).astype({"budget": "Int64", "seed": "Int64"}) if rows else pd.DataFrame()


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
    shown = table.assign(value=table["value"].map(text(lambda v: f"{v:.4f}")),
                         budget=table["budget"].map(text(lambda v: str(int(v)))),
                         seed=table["seed"].map(text(lambda v: str(int(v)))))
    print(shown.fillna("").to_string(index=False))
    counts = table["status"].value_counts()
    print(f"{len(table)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
