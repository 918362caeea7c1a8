"""Run folders → DataFrames. Reads only what the harness wrote (run.json, summary.json, metrics.jsonl).

Arguments may be run folders or any folder above them (a sweep, ``outputs/``); a run folder is one
holding ``run.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.run_record import SELECTION_FILE, read_status, recorded_budget

log = logging.getLogger(__name__)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder (holding run.json) at or below the given paths, sorted, without duplicates."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep folder")
        if (p / "run.json").is_file():
            found.add(p.resolve())
        else:
            found.update(f.parent.resolve() for f in p.rglob("run.json"))
    return sorted(found)


@dataclass
class Runs:
    """Loaded runs: one row per run in ``table`` and the runs that could not be used in ``skipped``."""

    table: pd.DataFrame
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_runs(paths: Iterable[str | Path], *, include_unfinished: bool = False) -> Runs:
    """One row per run: identity (method, task, model, seed, budget, config hash), status, summary.

    Runs that are not ``done`` are left out (and listed in ``skipped``) unless ``include_unfinished``.
    Unreadable records are reported by name and skipped.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir in find_runs(paths):
        try:
            rec = read_status(run_dir)
        except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8, not an object
            skipped.append((run_dir, f"run.json unreadable: {e}"))
            log.warning("%s: run.json unreadable (%s); left out", run_dir, e)
            continue
        status = rec.get("status", "unknown")
        if status != "done" and not include_unfinished:
            skipped.append((run_dir, f"status {status}" + (f": {rec.get('error')}" if rec.get("error") else "")))
            continue
        summary: dict[str, Any] = {}
        if (run_dir / "summary.json").is_file():
            try:
                summary = _read_json(run_dir / "summary.json")
                if not isinstance(summary, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                skipped.append((run_dir, f"summary.json unreadable: {e}"))
                log.warning("%s: summary.json unreadable (%s); left out", run_dir, e)
                continue
        elif status == "done":
            log.warning("%s: status done but summary.json is missing (partial run folder?); no final metrics", run_dir)
        cfg = rec.get("config", {})
        method_cfg = cfg.get("method", {})
        row = {
            "run_dir": str(run_dir),
            "status": status,
            "method": rec.get("method", method_cfg.get("name")),
            "task": rec.get("task"),
            "model": rec.get("model"),
            "seed": rec.get("seed"),
            "budget": recorded_budget(rec),
            "config_hash": rec.get("config_hash"),
            "group": rec.get("group"),
            "device": rec.get("environment", {}).get("device"),
            # the method's own display name and colour (records from before they were written: None)
            "method_label": rec.get("method_label"),
            "method_color": rec.get("method_color"),
        }
        row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        rows.append(row)
    return Runs(pd.DataFrame(rows), skipped)


def unchosen_candidates(run_dirs: Iterable[str | Path]) -> dict[str, str]:
    """Config hash → why it is left out, for the stage-1 runs of a selection sweep (the ``compare`` preset)
    whose value was not chosen: they served to choose the learning rate on the validation split and are
    not results. Read from ``selection.json`` in each run's sweep folder; runs of the chosen value (stage 2,
    including the stage-1 run that is also seed 0) are kept."""
    out: dict[str, str] = {}
    for sweep in sorted({Path(d).parent for d in run_dirs}):
        f = sweep / SELECTION_FILE
        if not f.is_file():
            continue
        try:
            sel = _read_json(f)
            points = sel["points"]
            key = sel.get("key", "value")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); every run of that sweep is used", f, e)
            continue
        for pt in points:
            kept = {c.get("config_hash") for c in pt.get("stage2", [])}
            for cand in pt.get("candidates", []):
                h = cand.get("config_hash")
                if h and h not in kept:
                    out[h] = (f"selection candidate not chosen ({key}={cand.get('value')}, chosen "
                              f"{pt.get('chosen')}; {f})")
    return out


def edge_choices(run_dirs: Iterable[str | Path]) -> list[str]:
    """One line per grid point of a selection sweep whose chosen value is still at an edge of the values
    tried (after the sweeper's extension, ``selection.json``'s ``at_grid_edge``): the optimum may lie beyond."""
    out: list[str] = []
    for sweep in sorted({Path(d).parent for d in run_dirs}):
        f = sweep / SELECTION_FILE
        if not f.is_file():
            continue
        try:
            sel = _read_json(f)
            for pt in sel["points"]:
                if pt.get("at_grid_edge"):
                    tried = sorted(float(c["value"]) for c in pt.get("candidates", []))
                    out.append(f"{pt.get('point')}: {sel.get('key')}={pt.get('chosen')} chosen at the edge of the "
                               f"values tried {tried} ({f})")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); its grid edges are not checked", f, e)
    return out


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.jsonl`` of one run as a DataFrame (one row per logged step; a torn last line is dropped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:  # bad bytes make that line unreadable, not the file
        for i, line in enumerate(f):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is not JSON (torn write?); skipped", path, i + 1)
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                log.warning("%s: line %d is not a JSON object; skipped", path, i + 1)
    return pd.DataFrame(rows)


def load_run_record(run_dir: str | Path) -> dict[str, Any]:
    """run.json of one run."""
    return _read_json(Path(run_dir) / "run.json")
