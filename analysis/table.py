"""``python -m analysis table RUNS…``: methods compared, mean ± interval over seeds.

RUNS are run folders, sweep folders (any folder above run folders) or PEFT ``method_comparison`` result
files / folders, several at once. The table goes to the terminal (or ``-o FILE``); runs that are not
``done`` are left out and listed on stderr. Nothing is written into the input folders. With ``--wandb on``
(or ``auto`` and runs tracked with W&B) the comparison is also logged to W&B, in the sweep's group, as a Table
and a ``comparison-table`` artifact; the W&B run folder goes into ``--plots`` DIR, else a new
``./analysis-table-<time>/``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from analysis import compare, inputs, load, render
from analysis.errors import BadOption
from analysis import stats as S

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``table`` (shared with ``report`` where they mean the same)."""
    p.add_argument("runs", nargs="+", help="run folders, sweep folders, PEFT result files or folders, or a per-run "
                                           "CSV written by --layout runs")
    p.add_argument("--layout", choices=["wide", "long", "runs"], default="wide",
                   help="wide: rows method × budget, a column per task + average (default); "
                        "long: a row per (task, method, budget) with interval, seeds, time, memory, params, then "
                        "the contrasts; runs: the per-run values as CSV (readable back as input: the tables "
                        "re-derive from it)")
    p.add_argument("--format", dest="fmt", choices=["markdown", "latex", "csv"], default="markdown")
    add_common(p)
    p.add_argument("-o", "--output", help="write the table to this file instead of the terminal")
    p.add_argument("--plots", metavar="DIR", nargs="?", const="",
                   help="also write Pareto plots and learning curves (PNG + PDF) to DIR (default: a new "
                        "./analysis-table-<time>/)")
    p.add_argument("--wandb", choices=["off", "on", "auto"], default="off",
                   help="log the table to W&B: off (default), on, or auto = when the runs were tracked with W&B")


def add_common(p: argparse.ArgumentParser) -> None:
    """Options that ``table`` and ``report`` share."""
    p.add_argument("--metric", default=None, help="metric name (default: each task's official metric)")
    p.add_argument("--best", action="store_true", help="use the best eval over the run instead of the final one")
    p.add_argument("--interval", choices=["t", "bootstrap", "none"], default="t",
                   help="interval over seeds: Student-t (default), percentile bootstrap, or none")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--margin", type=float, default=None,
                   help="practical margin of the contrasts and verdicts, in the metric's units (default per metric: "
                        "0.01 = 1 point of accuracy, F1, Matthews or correlation); equivalent = the 90%% interval "
                        "inside ±margin")
    p.add_argument("--digits", type=int, default=4, help="decimals of metric values")
    p.add_argument("--percent", action="store_true", help="show metric values × 100")
    p.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")
    p.add_argument("--peft-task", default="metamathqa", help="task name for PEFT result files (they name none)")


def check_options(args: argparse.Namespace) -> None:
    """Options checked before any file is read: BadOption naming the option."""
    try:
        S.check_confidence(args.confidence)
    except ValueError as e:
        raise BadOption(f"--confidence: {e}") from None
    margin = getattr(args, "margin", None)
    if margin is not None and not (margin > 0 and margin < float("inf")):
        raise BadOption(f"--margin: must be a number > 0 in the metric's units, e.g. 0.01; got {margin}")
    if args.digits < 0 or args.digits > 12:
        raise BadOption(f"--digits: must be 0..12, got {args.digits}")


def report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """List the runs left out on stderr."""
    if skipped:
        print(f"left out {len(skipped)} run(s):", file=sys.stderr)
        for path, why in skipped:
            print(f"  {path}: {why}", file=sys.stderr)


def load_finished(args: argparse.Namespace, purpose: str) -> Optional[tuple[pd.DataFrame, list[tuple[Path, str]], Any, dict[str, Any]]]:
    """(runs, runs left out, metrics, comparison options) from the arguments of :func:`add_common`, the runs
    left out listed on stderr; None after an error line when no run finished (nothing ``to {purpose}``).
    The options themselves are checked by the caller first (:func:`check_options`), before any output folder."""
    runs, skipped, metrics = inputs.load_inputs(args.runs, include_unfinished=args.include_unfinished,
                                                 peft_task=args.peft_task)
    report_skipped(skipped)
    if runs.empty:
        print(f"error: no finished runs to {purpose}", file=sys.stderr)
        return None
    if args.metric is not None:
        known = sorted({c.split("/", 1)[1] for c in runs.columns if c.startswith("eval/")})
        if args.metric not in known:
            raise BadOption(f"--metric: no run has the metric {args.metric!r}; these runs have {known}")
    if args.best:
        compare.check_best_selection(runs)
    opts = dict(metric=args.metric, which="best" if args.best else "final", kind=args.interval,
                confidence=args.confidence)
    return runs, skipped, metrics, opts


def sequential_bound(runs: pd.DataFrame, layout: str) -> Any:
    """The boundary of the sequential sweep the runs come from (its contrasts were looked at after every batch
    of seeds, so their p's and intervals are the repeated ones, :mod:`analysis.sequential`), or None."""
    if layout != "long" or "run_dir" not in runs:
        return None
    try:
        looks = load.sequential_looks(runs["run_dir"].dropna())
    except ValueError as e:
        raise BadOption(str(e)) from e
    if looks is None:
        return None
    from analysis.sequential import boundary

    bound = boundary(looks)
    print(f"sequential sweep (looks at {', '.join(map(str, looks))} seeds): contrasts use its boundary, "
          f"{bound.describe()}", file=sys.stderr)
    return bound


def main(args: argparse.Namespace) -> int:
    """Load, compare, print (or write); 1 when no finished run was found."""
    from analysis.outputs import check_file, out_folder

    check_options(args)
    output = check_file(Path(args.output), "-o/--output") if args.output else None
    folder = out_folder(args.plots, "--plots", "table") if args.plots is not None or args.wandb != "off" else None
    loaded = load_finished(args, "compare")
    if loaded is None:
        return 1
    runs, _, metrics, opts = loaded
    text = render.table_text(runs, layout=args.layout, fmt=args.fmt, digits=args.digits,
                              scale=100.0 if args.percent else 1.0, margin=args.margin,
                              bound=sequential_bound(runs, args.layout), **opts)
    edges = load.edge_choices(runs["run_dir"].dropna()) if "run_dir" in runs else []
    if edges and args.fmt == "markdown":
        text += "\nLearning rates chosen at an edge of the grid tried (the best may lie beyond):\n\n" + \
            "".join(f"- {e}\n" for e in edges)
    elif edges:
        for e in edges:
            print(f"chosen at a grid edge: {e}", file=sys.stderr)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        log.info("wrote %s", output)
    else:
        sys.stdout.write(text)
    if args.plots is not None:
        assert folder is not None
        write_plots(runs, metrics, folder, **opts)
        print(f"plots in {folder}", file=sys.stderr)
    if args.wandb != "off":
        assert folder is not None
        long = compare.compare(runs, **opts)
        log_to_wandb(runs, long, folder, force=args.wandb == "on", args=args)
    return 0


def write_plots(runs: pd.DataFrame, metrics: dict[str, pd.DataFrame], out: Path, **opts: Any) -> list[Path]:
    """Pareto plots and learning curves per (model, task) as PNG + PDF + the CSV they draw in ``out`` (below 3
    seeds each seed's value and curve instead of an interval); the paths written."""
    from analysis.figure_files import save_figure
    from analysis.plots import compare as pc

    out.mkdir(parents=True, exist_ok=True)
    long = compare.compare(runs, **opts)
    seeds = compare.seed_values(runs, metric=opts.get("metric"), which=opts.get("which", "final"))
    cur = compare.curves(runs, metrics, metric=opts.get("metric"), kind=opts.get("kind", "t"),
                         confidence=opts.get("confidence", 0.95))
    points = compare.curve_points(runs, metrics, metric=opts.get("metric"))
    written: list[Path] = []
    for (model, task), _ in long.groupby(["model", "task"], sort=False):
        stem = slug(f"{model}_{task}")
        for name, fig, data in ((f"pareto_{stem}", pc.pareto_figure(long, task=task, model=model, seeds=seeds),
                                 pc.pareto_data(long, task=task, model=model, seeds=seeds)),
                                (f"curves_{stem}", pc.curves_figure(cur, tasks=[task], model=model, seeds=points),
                                 pc.curves_data(cur, tasks=[task], model=model, seeds=points))):
            written += save_figure(fig, out, name, data)
    log.info("wrote %d plot files to %s", len(written), out)
    return written


def slug(s: str) -> str:
    """A file-name-safe version of ``s``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


# --------------------------------------------------------------------------------------------- W&B

#: Where ``--wandb on`` logs when no input run was tracked with W&B.
UNTRACKED_TARGET = {"project": "lora-harness", "entity": None, "mode": "offline", "group": None}


def wandb_targets(runs: pd.DataFrame, *, force: bool = False) -> list[dict[str, Any]]:
    """One W&B destination per sweep group among harness runs tracked with W&B: project, entity, mode,
    group; ``force`` (``--wandb on``): :data:`UNTRACKED_TARGET` when no run was tracked."""
    from analysis.load import load_run_record

    if "source" not in runs or runs.empty:
        return [dict(UNTRACKED_TARGET)] if force else []
    out: dict[str, dict[str, Any]] = {}
    h = runs[runs["source"] == "harness"]
    for rd, group in zip(h["run_dir"], h.get("group", pd.Series([None] * len(h)))):
        try:
            tr = load_run_record(rd).get("config", {}).get("tracking", {})
        except (OSError, ValueError):
            continue
        if not tr.get("wandb") or tr.get("mode", "disabled") == "disabled":
            continue
        g = tr.get("group") or group or Path(rd).parent.name
        out.setdefault(g, {"project": tr.get("project"), "entity": tr.get("entity"), "mode": tr.get("mode"),
                           "group": g})
    return list(out.values()) or ([dict(UNTRACKED_TARGET)] if force else [])


def publish_to_sweeps(runs: pd.DataFrame | Sequence[str | Path], out: Path, *, name: str, force: bool,
                      files: Optional[Mapping[str, Path]] = None,
                      tables: Optional[Mapping[str, pd.DataFrame]] = None) -> list[str]:
    """``files`` and ``tables`` into the W&B run ``<name>-<group>`` of each :func:`wandb_targets` destination
    (:func:`harness.tracking.publish`: files under ``out/wandb/``, the run reused by later calls; its config
    lists the input runs). ``runs``: the loaded runs, or harness run folders. ``force`` (``--wandb on``): also
    when no run was tracked (offline). Returns the W&B run folders written; never raises."""
    from harness.tracking import publish

    if not isinstance(runs, pd.DataFrame):
        runs = pd.DataFrame({"run_dir": list(dict.fromkeys(map(str, runs))), "source": "harness"})
    config = {"runs": sorted(map(str, runs["run_dir"].unique())) if "run_dir" in runs else []}
    written = []
    for t in wandb_targets(runs, force=force):
        folder = publish(out, name=f"{name}-{t['group'] or 'runs'}", mode=t["mode"], project=t["project"],
                         entity=t["entity"], group=t["group"], files=files, tables=tables, config=config)
        if folder is not None:
            written.append(folder)
    return written


def log_to_wandb(runs: pd.DataFrame, long: pd.DataFrame, out: Path, *, force: bool = False,
                 args: Optional[argparse.Namespace] = None) -> list[str]:
    """Log the comparison of each W&B-tracked sweep group as a W&B Table (``comparison/long``,
    ``comparison/wide``) and a ``comparison-table`` artifact, in a ``job_type=analysis`` run of the same
    project and group, through :func:`harness.tracking.publish` (one run per group, reused by later calls;
    offline runs land in ``out/wandb/``; ``wandb sync`` uploads them; never in the input folders). ``force``:
    also when no run was tracked (offline). Never raises: W&B problems are logged. Returns the W&B run
    directories written."""
    from harness.tracking import publish

    targets = wandb_targets(runs, force=force)
    written = []
    for t in targets:
        sel = long
        if t["group"] is not None and "group" in runs:
            dirs = set(runs.loc[runs["group"] == t["group"], "run_dir"])
            keys = runs.loc[runs["run_dir"].isin(dirs), ["model", "task", "method"]].drop_duplicates()
            sel = long.merge(keys, on=["model", "task", "method"], how="inner") if not keys.empty else long
        folder = publish(out, name=f"comparison-{t['group'] or 'runs'}", mode=t["mode"], project=t["project"],
                         entity=t["entity"], group=t["group"], artifact_type="comparison-table",
                         tables={"comparison/long": _wandb_frame(sel),
                                 "comparison/wide": _wandb_frame(compare.wide(sel))},
                         config={"interval": getattr(args, "interval", "t"),
                                 "confidence": getattr(args, "confidence", 0.95),
                                 "inputs": [str(p) for p in getattr(args, "runs", [])]})
        if folder is not None:
            written.append(folder)
    return written


def _wandb_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Columns W&B tables accept: no NaN in object columns, budgets as strings, private columns dropped."""
    d = df.drop(columns=[c for c in df.columns if str(c).endswith("_hib")]).copy()
    for c in d.columns:
        if d[c].dtype == object:
            d[c] = d[c].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return d
