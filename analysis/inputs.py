"""Every input kind → one runs frame: harness run and sweep folders and PEFT ``method_comparison`` result
files (or folders of them), with variants named and each run counted once (:mod:`analysis.compare`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd

from analysis import load, peft_format
from analysis.errors import BadOption
from analysis.compare import one_count, with_variants
from harness.record import find_run_files

log = logging.getLogger(__name__)


def load_inputs(paths: Iterable[str | Path], *, include_unfinished: bool = False,
                peft_task: str = "metamathqa") -> tuple[pd.DataFrame, list[tuple[Path, str]], dict[str, pd.DataFrame]]:
    """Harness run/sweep folders and PEFT result files (or folders of them) → (runs frame with variants,
    skipped runs with reasons, metrics frames by ``run_dir`` for learning curves)."""
    paths = [Path(p) for p in paths]
    peft_files: list[Path] = []
    harness_paths: list[Path] = []
    frames, skipped, metrics = [], [], {}
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run, sweep or PEFT result file")
        if p.is_file() and p.suffix == ".csv":
            frames.append(read_runs_csv(p))
            continue
        found = peft_format.find_result_files(p)
        if found:
            peft_files += found
        if p.is_dir() and (found == [] or find_run_files(p)):
            harness_paths.append(p)
    if harness_paths:
        runs = load.load_runs(harness_paths, include_unfinished=include_unfinished)
        skipped += runs.skipped
        if not runs.table.empty:
            t = runs.table.assign(source="harness")
            unchosen = load.unchosen_candidates(t["run_dir"])
            out = t["config_hash"].isin(list(unchosen))
            skipped += [(Path(rd), unchosen[h]) for rd, h in zip(t.loc[out, "run_dir"], t.loc[out, "config_hash"])]
            t = t.loc[~out]
            configs = {}
            for rd in t["run_dir"]:
                try:
                    configs[rd] = load.load_run_record(rd).get("config", {})
                except (OSError, ValueError) as e:
                    log.warning("%s: no configuration (%s)", rd, e)
            t = with_variants(t, configs)
            for rd in t["run_dir"]:
                try:
                    metrics[rd] = load.load_metrics(rd)
                except OSError:
                    pass
            frames.append(t)
    if peft_files:
        pr = peft_format.load_peft_results(peft_files, task=peft_task, include_unfinished=include_unfinished)
        skipped += pr.skipped
        if not pr.table.empty:
            frames.append(pr.table)
            for rd in pr.table["run_dir"]:
                metrics[rd] = peft_format.load_peft_metrics(rd)
    table = one_count(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
    return table, skipped, metrics


def read_runs_csv(path: Path) -> pd.DataFrame:
    """A per-run CSV written by ``table --layout runs`` (:func:`analysis.render.runs_csv`) as a runs frame;
    BadOption (exit 2) naming the file when it is not one."""
    try:
        t = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise BadOption(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in ("run_dir", "task", "method", "seed", "main_metric") if c not in t.columns]
    if missing:
        raise BadOption(f"{path}: not a per-run CSV (no column {missing[0]}); write one with "
                         f"python -m analysis table <sweep> --layout runs --format csv")
    t["variant"] = t["variant"].fillna("") if "variant" in t else ""
    return t
