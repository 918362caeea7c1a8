"""``python -m analysis figures forgetting RUNS… [-o DIR]``: what each configuration learned beside what it forgot.

Reads only what the runs recorded (summary.json, or ``harness_info.summary`` of a PEFT file exported by
``export-peft``): the **learned score** of a run is its final main metric minus the base model's
(``eval/<m>`` − ``base/<m>``, the base scored at step 0); each **forgetting measure** is a probe the run scored before
the first step and after the last (``forget/<probe>/<metric>/change``: a reasoning-gym task not trained on, the loss
on a fixed text sample), turned so that a positive value is forgetting (a score's drop, a loss's increase).

Runs are grouped as the tables group them (:func:`analysis.compare.with_variants`: model, task, method, budget and
every other recorded setting that differs, but the seed); over a group's seeds each quantity has its mean and
Student-t interval. Written into ``-o/--out`` (default: a new ``./analysis-figures-forgetting-<time>/``, never the
run folders):

* ``forgetting.{png,pdf,csv}``: one panel per forgetting measure, learned score (y) against forgetting (x); a
  group's seeds as small points, its mean with both intervals from 3 seeds (below 3 the seeds alone);
* ``forgetting_summary.csv``: a row per group and measure: the learned score and the forgetting side by side
  (mean, interval, seeds), the base and final score;
* ``forgetting_runs.csv``: a row per run and measure.

Runs without a base score or without a forgetting record are left out and counted in the terminal line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis import stats as S
from analysis.compare import KEYS, per_run_values
from analysis.errors import BadOption
from analysis.labels import higher_is_better, method_label, method_order_key
from analysis.outputs import out_folder

#: the figure's name, from this module's (figures_<name>): its command word and file prefix
NAME = __name__.rpartition("figures_")[2]
#: forgetting records in a runs frame: ``forget/<probe>/<metric>/change``
PREFIX, SUFFIX = "forget/", "/change"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures forgetting``."""
    parser.add_argument("runs", nargs="+", help="run folders, folders above them (sweeps) or exported PEFT files")
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None,
                        help="output folder (default: a new ./analysis-figures-forgetting-<time>/; never the run "
                             "folders)")
    parser.add_argument("--measure", action="append", default=[], metavar="PROBE/METRIC",
                        help="a forgetting measure the runs recorded, e.g. text/loss (repeatable; default: all)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the intervals over seeds, in (0, 1) (default 0.95)")
    parser.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")


def recorded_measures(runs: pd.DataFrame) -> list[str]:
    """``<probe>/<metric>`` of every ``forget/<probe>/<metric>/change`` column some run holds a value in."""
    return sorted(c[len(PREFIX):-len(SUFFIX)] for c in runs.columns
                  if c.startswith(PREFIX) and c.endswith(SUFFIX) and runs[c].notna().any())


def forgetting(change: pd.Series, measure: str) -> pd.Series:
    """A probe's change (final − base) as forgetting: the drop of a score, the increase of a loss."""
    return change if not higher_is_better(measure.rsplit("/", 1)[-1]) else -change


def measure_label(measure: str) -> str:
    """``text loss increase`` / ``leg_counting exact_match drop``: what the x axis shows."""
    probe, metric = measure.rsplit("/", 1)
    return f"{probe} {metric} {'drop' if higher_is_better(metric) else 'increase'}"


def run_points(runs: pd.DataFrame, measures: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """One row per (run, measure): the keys, ``label``, ``seed``, ``metric``, ``base``, ``final``, ``learned``
    (final − base), ``measure``, ``forgetting``; and how many runs were left out (no base score or no record of
    any of ``measures``)."""
    r = per_run_values(runs)
    base = pd.Series([r.at[i, f"base/{m}"] if f"base/{m}" in r else math.nan for i, m in r["metric"].items()],
                     index=r.index, dtype=float)
    rows = []
    used: set[Any] = set()
    for measure in measures:
        change = pd.to_numeric(r.get(f"{PREFIX}{measure}{SUFFIX}", pd.Series(math.nan, index=r.index)),
                               errors="coerce")
        ok = base.notna() & change.notna()
        used |= set(r.index[ok])
        part = r.loc[ok, [*KEYS, "seed", "run_dir", "metric"]].assign(
            base=base[ok], final=r.loc[ok, "_value"], learned=r.loc[ok, "_value"] - base[ok], measure=measure,
            forgetting=forgetting(change[ok], measure))
        rows.append(part)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if not out.empty:
        out.insert(len(KEYS), "label", [_label(row, runs) for row in out.itertuples(index=False)])
    return out, len(runs) - len(used)


def _label(row: Any, runs: pd.DataFrame) -> str:
    """The group's legend label as its runs recorded it (``LoRA r=16``, ``+ (variant)``)."""
    rec = runs[runs["method"].astype(str) == str(row.method)]
    label = rec["method_label"].dropna().iloc[0] if "method_label" in rec and rec["method_label"].notna().any() \
        else None
    budget = None if row.budget is None or pd.isna(row.budget) else row.budget
    return method_label(row.method, budget, row.variant, label=label, rows=runs)


def summarize(points: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """A row per group (the keys and ``label``) and measure: ``n``, ``seeds``, ``metric``, ``base`` and ``final``
    (means), ``learned_{mean,low,high}`` beside ``forgetting_{mean,low,high}`` (Student-t over seeds; no interval
    below 2 seeds)."""
    rows = []
    by = [*KEYS, "label", "measure", "metric"]
    for key, g in points.groupby(by, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(by, key))
        learned = S.t_interval(g["learned"], confidence=confidence)
        forgot = S.t_interval(g["forgetting"], confidence=confidence)
        row.update(n=learned.n, seeds=",".join(str(int(s)) for s in sorted(g["seed"].dropna())),
                   base=float(g["base"].mean()), final=float(g["final"].mean()),
                   learned_mean=learned.mean, learned_low=learned.low, learned_high=learned.high,
                   forgetting_mean=forgot.mean, forgetting_low=forgot.low, forgetting_high=forgot.high)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = out["method"].map(lambda m: method_order_key(m, points))
    return out.assign(_o=order).sort_values(["measure", "_o", "label"], kind="stable").drop(columns="_o") \
        .reset_index(drop=True)


def _interval_cell(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3g}" + (f" [{low:+.3g}, {high:+.3g}]" if math.isfinite(low) else "")


def summary_lines(summary: pd.DataFrame) -> list[str]:
    """One terminal line per group and measure: learned score beside forgetting, with intervals and seeds."""
    return [f"{r.label}: learned {r.metric} {_interval_cell(r.learned_mean, r.learned_low, r.learned_high)}, "
            f"forgetting ({measure_label(r.measure)}) "
            f"{_interval_cell(r.forgetting_mean, r.forgetting_low, r.forgetting_high)} ({r.n} seed"
            f"{'s' if r.n != 1 else ''})" for r in summary.itertuples(index=False)]


def _panel(ax: Any, measure: str, points: pd.DataFrame, summary: pd.DataFrame,
           styles: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """One measure's panel: each group's seeds, its mean (with both intervals from 3 seeds); legend handles."""
    from matplotlib.lines import Line2D

    from analysis.plots.style import first, method_marker, plain_ticks, scaled_label

    mine, pts = summary[summary["measure"] == measure], points[points["measure"] == measure]
    xlabel, fx = scaled_label(f"forgetting: {measure_label(measure)}", [*pts["forgetting"], *mine["forgetting_low"],
                                                                        *mine["forgetting_high"]])
    ylabel, fy = scaled_label(f"learned: {first(points, 'metric') or 'main metric'}, final − base",
                              [*pts["learned"], *mine["learned_low"], *mine["learned_high"]])
    handles = {}
    for r in mine.itertuples(index=False):
        colour, marker = styles[str(r.method)][1], method_marker(r.method, points)
        seeds = pts[pts["label"] == r.label]
        ax.scatter(seeds["forgetting"] / fx, seeds["learned"] / fy, s=14, color=colour, marker=marker, alpha=0.45,
                   lw=0)
        err = r.n >= 3 and math.isfinite(r.learned_low) and math.isfinite(r.forgetting_low)
        xerr = [[(r.forgetting_mean - r.forgetting_low) / fx], [(r.forgetting_high - r.forgetting_mean) / fx]]
        yerr = [[(r.learned_mean - r.learned_low) / fy], [(r.learned_high - r.learned_mean) / fy]]
        ax.errorbar(r.forgetting_mean / fx, r.learned_mean / fy, xerr=xerr if err else None,
                    yerr=yerr if err else None, fmt=marker, color=colour, ms=7, capsize=3)
        handles[r.label] = Line2D([], [], color=colour, marker=marker, ls="", label=r.label)
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    plain_ticks(ax)
    return handles


def figure(points: pd.DataFrame, summary: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Learned score against forgetting, one panel per measure, one colour and marker per group's method."""
    import matplotlib.pyplot as plt

    from analysis.plots.style import first, legend_below, method_styles, setup_line

    measures = list(dict.fromkeys(summary["measure"]))
    ncols = min(3, len(measures))
    nrows = -(-len(measures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows + 0.8), squeeze=False,
                             layout="constrained")
    styles = method_styles(points)
    handles: dict[str, Any] = {}
    for ax, measure in zip(axes.flat, measures):
        handles.update(_panel(ax, measure, points, summary, styles))
    for ax in list(axes.flat)[len(measures):]:
        ax.set_visible(False)
    n = int(summary["n"].max()) if len(summary) else 0
    setup = setup_line(model=first(runs, "model"), task=first(runs, "task"), steps=first(runs, "steps"), seeds=n)
    fig.suptitle(f"Learned vs forgotten, per configuration ({'mean ± interval' if n >= 3 else 'each seed'})\n{setup}",
                 fontsize=10)
    legend_below(fig, list(handles.values()))
    return fig


def drawn(points: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """What the figure draws, for its CSV: each seed's point and each group's mean with its intervals."""
    seeds = points.assign(kind="seed")[["kind", "measure", "label", "seed", "forgetting", "learned"]]
    means = summary.assign(kind="mean", seed=np.nan).rename(columns={"forgetting_mean": "forgetting",
                                                                      "learned_mean": "learned"})
    cols = ["kind", "measure", "label", "seed", "forgetting", "learned", "forgetting_low", "forgetting_high",
            "learned_low", "learned_high", "n"]
    return pd.concat([seeds, means.reindex(columns=cols)], ignore_index=True).reindex(columns=cols)


def chosen_measures(runs: pd.DataFrame, wanted: Sequence[str]) -> list[str]:
    """The measures to draw: ``wanted`` (each one the runs recorded; BadOption naming it otherwise), else all."""
    have = recorded_measures(runs)
    if not have:
        raise BadOption("no run records forgetting (forget/<probe>/<metric>/change in summary.json): causal-LM runs "
                        "do (task.problem=causal_lm, a reasoning-gym task with task.rg.forget and the text sample)")
    bad = [m for m in wanted if m not in have]
    if bad:
        raise BadOption(f"--measure: {bad[0]} is not recorded by these runs; they have {have}")
    return list(wanted) or have


def main(args: argparse.Namespace) -> int:
    """Write the figure and the tables; print the learned score beside the forgetting of every group."""
    from analysis.figure_files import save_figure
    from analysis.inputs import load_inputs

    if not 0 < args.confidence < 1:
        raise BadOption(f"--confidence: must be in (0, 1), got {args.confidence}")
    runs, skipped, _ = load_inputs(args.runs, include_unfinished=args.include_unfinished)
    if runs.empty:
        raise BadOption(f"no finished runs under {args.runs}" + (f" ({len(skipped)} not done)" if skipped else ""))
    measures = chosen_measures(runs, args.measure)
    points, left_out = run_points(runs, measures)
    if points.empty:
        raise BadOption("no run records both a base score (base/<metric>) and forgetting; the base model is scored "
                        "at step 0 by causal-LM runs")
    summary = summarize(points, confidence=args.confidence)
    out = out_folder(args.out, "-o/--output", f"figures-{NAME}")
    written = save_figure(figure(points, summary, runs), out, NAME, drawn(points, summary))
    summary.to_csv(out / f"{NAME}_summary.csv", index=False)
    points.to_csv(out / f"{NAME}_runs.csv", index=False)
    written += [out / f"{NAME}_summary.csv", out / f"{NAME}_runs.csv"]
    print("\n".join(summary_lines(summary)))
    if left_out:
        print(f"{left_out} run(s) left out: no base score or no forgetting record")
    print("\n".join(f"wrote {w}" for w in written))
    return 0
