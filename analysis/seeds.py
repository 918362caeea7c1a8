"""``python -m analysis seeds RUNS…``: how many seeds each contrast needs, from the variance of a pilot.

For every contrast of ``analysis table --layout long`` (each method vs full FT, methods of one budget against
each other) it prints the sd of one seed's difference (paired: of the per-seed differences; Welch:
sqrt(s_a² + s_b²)), the observed difference, the seeds present and the seeds with which the contrast is
decided — equivalent at ``--margin`` or different from 0 — with probability ``--power``, if the observed
difference and sd are the truth (:func:`analysis.stats.seeds_needed`; alone, before Holm). Contrasts with
fewer seeds than that carry ``low n`` in the tables.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

import pandas as pd

from analysis import compare, render
from analysis.labels import task_label
from analysis import stats as S
from analysis.errors import BadOption
from analysis.table import load_finished


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seeds``."""
    p.add_argument("runs", nargs="+", help="run folders or sweep folders (a pilot: at least 2 seeds per configuration)")
    p.add_argument("--margin", type=float, default=None,
                   help="practical margin in the metric's units (default per metric: 0.01)")
    p.add_argument("--power", type=float, default=0.8, help="probability of deciding, in (0, 1) (default 0.8)")
    p.add_argument("--metric", default=None, help="metric name (default: each task's official metric)")
    p.add_argument("--format", dest="fmt", choices=["markdown", "csv"], default="markdown")
    p.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")


def plan(cons: pd.DataFrame, *, power: float, alpha: float = 0.05) -> pd.DataFrame:
    """Per contrast of :func:`analysis.compare.contrasts`: task, contrast, metric, sd, difference, margin,
    n (now), paired, seeds_needed (at ``power``), more (seeds to add; 0 when enough)."""
    rows = []
    for r in cons.itertuples(index=False):
        ok = math.isfinite(r.sd) and r.sd > 0 and math.isfinite(r.difference)
        need = S.seeds_needed(r.sd, r.difference, margin=r.margin, alpha=alpha, power=power, paired=bool(r.paired)) \
            if ok else None
        rows.append({"model": r.model, "task": r.task, "contrast": r.contrast, "metric": r.metric, "sd": r.sd,
                     "difference": r.difference, "margin": r.margin, "n": r.n, "paired": r.paired,
                     "seeds_needed": need, "more": None if need is None else max(0, need - int(r.n))})
    return pd.DataFrame(rows, columns=["model", "task", "contrast", "metric", "sd", "difference", "margin", "n",
                                       "paired", "seeds_needed", "more"])


def sequential_look(paths: Sequence[str], *, looks: Sequence[int], margin: Optional[float] = None,
                    alpha: float = 0.05) -> pd.DataFrame:
    """One look of a sequential sweep (``hydra.sweeper.sequential``) at the finished runs under ``paths``: the
    contrasts of :func:`analysis.compare.contrasts` decided with repeated intervals for the planned ``looks``
    (:mod:`analysis.sequential`; Holm over the contrasts); an empty frame when no run finished."""
    from analysis.inputs import load_inputs
    from analysis.sequential import boundary

    runs, _, _ = load_inputs(paths)
    if runs.empty:
        return pd.DataFrame(columns=compare.CONTRAST_COLUMNS)
    return compare.contrasts(runs, margin=margin, alpha=alpha, bound=boundary(looks))


def main(args: argparse.Namespace) -> int:
    """Print the plan; 1 when no finished run was found."""
    if not 0 < args.power < 1:
        raise BadOption(f"--power: must lie in (0, 1), e.g. 0.8; got {args.power}")
    if args.margin is not None and not (0 < args.margin < float("inf")):
        raise BadOption(f"--margin: must be a number > 0 in the metric's units, e.g. 0.01; got {args.margin}")
    args.best, args.interval, args.confidence, args.peft_task = False, "t", 0.95, "metamathqa"
    loaded = load_finished(args, "plan seeds for")
    if loaded is None:
        return 1
    out = plan(compare.contrasts(loaded[0], metric=args.metric, margin=args.margin), power=args.power)
    if args.fmt == "csv":
        sys.stdout.write(out.to_csv(index=False))
        return 0
    cells = pd.DataFrame({
        "Task": out["task"].map(task_label), "Contrast": out["contrast"],
        "sd of one seed's difference": out["sd"].map(lambda v: "–" if pd.isna(v) else f"{v:.4f}"),
        "Difference": out["difference"].map(lambda v: f"{v:+.4f}"), "Margin": out["margin"].map(lambda v: f"±{v:g}"),
        "Seeds now": [f"{n} {'pairs' if p else 'per side'}" for n, p in zip(out["n"], out["paired"])],
        "Seeds needed": out["seeds_needed"].map(lambda v: "– (needs ≥ 2 seeds with spread)" if pd.isna(v)
                                                else f"≥ {S.MAX_SEEDS}" if v >= S.MAX_SEEDS else str(int(v)))})
    sys.stdout.write(render.render(cells, fmt="markdown", text=("Contrast", "Seeds now", "Seeds needed"), footer=[
        f"Seeds needed: the fewest with which the contrast is decided (equivalent within ±margin, or different from "
        f"0) with probability {args.power:g} at α = 0.05, if the observed difference and sd were the truth "
        "(noncentral t over the sd's sampling distribution; analysis.stats.seeds_needed). One contrast alone: a "
        "Holm family of k contrasts needs more. A pilot's sd is itself uncertain; re-plan after more seeds."]))
    return 0
