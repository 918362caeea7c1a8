"""Run folders → DataFrames. Reads only what the harness wrote (its records, through harness.record, which
validates them: a run whose record is damaged is left out with one warning line naming the file and the key).

Arguments may be run folders or any folder above them (a sweep, ``outputs/``); a run folder is one
holding ``run.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import pandas as pd

from harness.record import (DISPLAY_KEYS, METRICS_FILE, SELECTION_FILE, SEQUENTIAL_FILE, BadRecord, find_run_files, has_run, is_result, metrics_row,
                            read_json, read_run, read_summary, recorded_budget)

log = logging.getLogger(__name__)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder (holding run.json) at or below the given paths, sorted, without duplicates."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep folder")
        if has_run(p):
            found.add(p.resolve())
        else:
            found.update(f.parent.resolve() for f in find_run_files(p))
    return sorted(found)


@dataclass
class Runs:
    """Loaded runs: one row per run in ``table`` and the runs that could not be used in ``skipped``."""

    table: pd.DataFrame
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_runs(paths: Iterable[str | Path], *, include_unfinished: bool = False) -> Runs:
    """One row per run: identity (method, task, model, seed, budget, config hash), status, summary.

    Runs that are not ``done`` are left out (and listed in ``skipped``) unless ``include_unfinished``.
    Unreadable records are reported by name and skipped.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for run_dir in find_runs(paths):
        try:
            rec = read_run(run_dir)
            summary = read_summary(run_dir) if is_result(rec) or include_unfinished else {}
        except (OSError, BadRecord) as e:  # damaged: not JSON, a wrong type, a value out of range
            why = f"{e.path.name} unreadable: {e.key}: {e.why}" if isinstance(e, BadRecord) else f"unreadable: {e}"
            skipped.append((run_dir, why))
            log.warning("%s; this run is left out", e)
            continue
        status = rec.get("status", "unknown")
        if not is_result(rec) and not include_unfinished:
            skipped.append((run_dir, f"status {status}" + (f": {rec.get('error')}" if rec.get("error") else "")))
            continue
        if is_result(rec) and not summary:
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
            # how the method is shown, as its file declared it (records from before they were written: None)
            **{k: rec.get(k) for k in DISPLAY_KEYS},
        }
        row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        rows.append(row)
    return Runs(pd.DataFrame(rows), skipped)


def selections(run_dirs: Iterable[str | Path], unreadable: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, its content) of the ``selection.json`` of each sweep holding one of ``run_dirs`` (the ``compare``
    preset's record); an unreadable one is one warning ending with ``unreadable`` (what follows from it)."""
    for sweep in sorted({Path(d).parent for d in run_dirs}):
        f = sweep / SELECTION_FILE
        if not f.is_file():
            continue
        try:
            sel = read_json(f)
            if not isinstance(sel, dict) or not isinstance(sel.get("points"), list):
                raise ValueError("no list of points")
        except (OSError, ValueError, BadRecord) as e:
            log.warning("%s: unreadable (%s); %s", f, e, unreadable)
            continue
        yield f, sel


def unchosen_candidates(run_dirs: Iterable[str | Path]) -> dict[str, str]:
    """Config hash → why it is left out, for the stage-1 runs of a selection sweep (the ``compare`` preset)
    whose value was not chosen: they served to choose the learning rate on the validation split and are
    not results. Read from ``selection.json`` in each run's sweep folder; runs of the chosen value (stage 2,
    including the stage-1 run that is also seed 0) are kept."""
    out: dict[str, str] = {}
    for f, sel in selections(run_dirs, "every run of that sweep is used"):
        key = sel.get("key", "value")
        for pt in sel["points"]:
            kept = {c.get("config_hash") for c in pt.get("stage2", [])}
            for cand in pt.get("candidates", []):
                h = cand.get("config_hash")
                if h and h not in kept:
                    out[h] = (f"selection candidate not chosen ({key}={cand.get('value')}, chosen "
                              f"{pt.get('chosen')}; {f})")
    return out


def sequential_looks(run_dirs: Iterable[str | Path]) -> Optional[tuple[int, ...]]:
    """The planned looks (seed counts) of the sequential sweep holding ``run_dirs`` (its ``sequential.json``),
    or None when none of their sweeps is sequential; an unreadable record is one warning and counts as none.
    Runs of sequential sweeps with different looks cannot share one boundary: ValueError naming them."""
    found: dict[tuple[int, ...], Path] = {}
    for sweep in sorted({Path(d).parent for d in run_dirs}):
        f = sweep / SEQUENTIAL_FILE
        if not f.is_file():
            continue
        try:
            rec = read_json(f)
            looks = tuple(int(n) for n in rec["looks"])
            if not looks or min(looks) < 2:
                raise ValueError(f"looks {list(looks)}")
        except (OSError, ValueError, TypeError, KeyError, BadRecord) as e:
            log.warning("%s: unreadable (%s); its runs are compared as a fixed-sample sweep", f, e)
            continue
        found.setdefault(looks, f)
    if len(found) > 1:
        raise ValueError("runs of sequential sweeps with different looks: " +
                         "; ".join(f"{f} looks {list(k)}" for k, f in found.items()) + "; compare them separately")
    return next(iter(found), None)


def edge_choices(run_dirs: Iterable[str | Path]) -> list[str]:
    """One line per grid point of a selection sweep whose chosen value is still at an edge of the values
    tried (after the sweeper's extension, ``selection.json``'s ``at_grid_edge``): the optimum may lie beyond."""
    out: list[str] = []
    for f, sel in selections(run_dirs, "its grid edges are not checked"):
        for pt in sel["points"]:
            if isinstance(pt, dict) and pt.get("at_grid_edge"):
                tried = sorted(float(c["value"]) for c in pt.get("candidates", []) if isinstance(c, dict))
                out.append(f"{pt.get('point')}: {sel.get('key')}={pt.get('chosen')} chosen at the edge of the "
                           f"values tried {tried} ({f})")
    return out


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """``metrics.jsonl`` of one run as a DataFrame (one row per logged step; a torn last line is dropped)."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:  # bad bytes make that line unreadable, not the file
        for i, line in enumerate(f):
            try:
                rows.append(metrics_row(line))
            except ValueError as e:
                log.warning("%s: line %d is %s; skipped", path, i + 1, e)
    return pd.DataFrame(rows)


def load_run_record(run_dir: str | Path) -> dict[str, Any]:
    """run.json of one run, validated (harness.record.BadRecord, a ValueError, names a damaged key)."""
    return read_run(Path(run_dir), derive=False)
