"""AdaLoRA figures: the paper's Figure 3 rank heatmap (mean ± spread over seeds), small multiples over
steps, rank over time per matrix type (seed lines below 3 seeds, a ± std band from 3), the budget schedule
(formula and measured; one line per seed below 3 seeds, a min–max band from 3) with its residual panel.

Layers are drawn 1-based. Every function takes ``ax=None`` (or ``axes=None``), draws, and returns the Axes
(the figure builders return the Figure); nothing is written here and no table is drawn inside a figure
(the command writes the numbers as CSV / LaTeX beside it).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots.style import layer_ticklabels, plain_ticks
from harness.families import MATRIX_TYPES

#: one colour per matrix type of harness.families.MATRIX_TYPES (a decoder's Wg added without moving the others)
TYPE_COLORS = dict(zip(MATRIX_TYPES, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#e377c2", "#9467bd", "#8c564b")))
CMAP = "YlGnBu"


def _cell_text(mean: float, std: float, n: float) -> str:
    if mean != mean:  # NaN: matrix not adapted
        return ""
    whole = abs(mean - round(mean)) < 1e-9
    txt = f"{int(round(mean))}" if whole else f"{mean:.1f}"
    if n == n and n > 1 and std == std:
        txt += f"\n±{std:.1f}"
    return txt


def rank_heatmap(mean: pd.DataFrame, std: Optional[pd.DataFrame] = None, n: Optional[pd.DataFrame] = None, *,
                 ax: Optional[Axes] = None, vmin: float = 0.0, vmax: Optional[float] = None,
                 title: Optional[str] = None, annotate: bool = True, colorbar: bool = True,
                 fontsize: Optional[float] = None) -> Axes:
    """Figure 3: rank per (matrix type, layer). ``mean`` (rows × layers, 0-based layer columns) colours the
    cells; each cell shows the rank, and ``±std`` over seeds where ``n`` > 1. Layers are labelled 1-based."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.5 * mean.shape[1] + 2), 0.55 * mean.shape[0] + 1.5))
    vals = mean.to_numpy(dtype=float)
    vmax = float(np.nanmax(vals)) if vmax is None else vmax
    im = ax.imshow(np.ma.masked_invalid(vals), aspect="auto", cmap=CMAP, vmin=vmin, vmax=max(vmax, vmin + 1e-9))
    ax.set_xticks(range(mean.shape[1]), layer_ticklabels(mean.columns))
    ax.set_yticks(range(mean.shape[0]), list(mean.index))
    ax.set_xlabel("layer (1 = nearest the input)")
    if annotate:
        fs = fontsize or (8 if mean.shape[1] <= 12 else 6)
        if std is not None and n is not None and float(np.nanmax(n.to_numpy(dtype=float), initial=1)) > 1:
            fs = fs - 1
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                m = vals[i, j]
                s = std.iat[i, j] if std is not None else math.nan
                k = n.iat[i, j] if n is not None else 1
                txt = _cell_text(m, float(s), float(k))
                if txt:
                    dark = (m - vmin) / max(vmax - vmin, 1e-9) > 0.55
                    ax.text(j, i, txt, ha="center", va="center", fontsize=fs, color="white" if dark else "black",
                            linespacing=0.9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="rank (kept singular values)")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def rank_heatmap_grid(tables: Sequence[tuple[str, pd.DataFrame, Optional[pd.DataFrame], Optional[pd.DataFrame]]], *,
                      axes: Optional[Sequence[Axes]] = None, vmax: Optional[float] = None,
                      ncols: int = 2) -> list[Axes]:
    """Small multiples: one :func:`rank_heatmap` per (title, mean, std, n), on a shared colour scale with one
    colour bar for all panels."""
    if axes is None:
        nrows = math.ceil(len(tables) / ncols)
        m0 = tables[0][1]
        fig, grid = plt.subplots(nrows, ncols, squeeze=False,
                                 figsize=(ncols * max(4.0, 0.5 * m0.shape[1] + 1.5), nrows * (0.5 * m0.shape[0] + 1.4)),
                                 constrained_layout=True)
        axes = list(grid.ravel())
        for ax in axes[len(tables):]:
            ax.set_visible(False)
    if vmax is None:
        vmax = max(float(np.nanmax(t[1].to_numpy(dtype=float))) for t in tables)
    drawn = list(axes[: len(tables)])
    for ax, (title, mean, std, n) in zip(drawn, tables):
        rank_heatmap(mean, std, n, ax=ax, vmax=vmax, title=title, colorbar=False, fontsize=6)
    drawn[0].figure.colorbar(drawn[0].images[0], ax=drawn, fraction=0.03, pad=0.02, label="rank (kept singular values)")
    return drawn


def _runs_label(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _run_lines(per_run: Optional[pd.DataFrame], n: int) -> Optional[pd.DataFrame]:
    """``per_run`` when it should be drawn as one line per run: 2 runs (a band from 2 says nothing); else None."""
    return per_run if per_run is not None and 1 < n < 3 and per_run["run_dir"].nunique() > 1 else None


def _seed_names(runs: pd.DataFrame) -> list[str]:
    """``seed 0``, ``seed 1`` (``run 1``, ``run 2`` without a seed column), in run_dir order."""
    first_rows = runs.drop_duplicates("run_dir").sort_values("run_dir")
    if "seed" in first_rows:
        return [f"seed {s}" for s in first_rows["seed"]]
    return [f"run {i + 1}" for i in range(len(first_rows))]


def rank_over_time(curves: pd.DataFrame, *, per_run: Optional[pd.DataFrame] = None, ax: Optional[Axes] = None,
                   target: Optional[float] = None, init: Optional[float] = None) -> Axes:
    """Mean rank per matrix of each type against the optimizer step. ``curves`` has columns step, type,
    mean, std, n (:func:`analysis.ranks.rank_over_time`); ``per_run`` (run_dir, step, type, rank: each run's
    mean over its matrices of the type), when given and from fewer than 3 runs, is drawn as one line per
    run instead of a spread band (a band from 2 runs says nothing); from 3 runs on the band is ± std."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    n_runs = int(curves["n"].max()) if "n" in curves and len(curves) else 1
    seeds = _run_lines(per_run, n_runs)
    styles = ("-", "--")
    for t, sub in curves.groupby("type", observed=True, sort=True):
        c = TYPE_COLORS.get(str(t))
        if seeds is not None:
            for i, (_, run) in enumerate(seeds[seeds["type"] == t].groupby("run_dir", sort=True)):
                ax.step(run["step"], run["rank"], where="post", color=c, lw=1.1, ls=styles[i],
                        label=str(t) if i == 0 else None)
            continue
        ax.step(sub["step"], sub["mean"], where="post", label=str(t), color=c, lw=1.5)
        if n_runs >= 3 and sub["std"].notna().any():
            ax.fill_between(sub["step"], sub["mean"] - sub["std"].fillna(0), sub["mean"] + sub["std"].fillna(0),
                            step="post", color=c, alpha=0.15, lw=0)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=1, label="b(T)/n, final budget")
    if init is not None:
        ax.axhline(init, color="grey", ls="--", lw=0.8, label="b(0)/n, initial rank")
    handles, _ = ax.get_legend_handles_labels()
    if seeds is not None:
        handles += [Line2D([], [], color="0.3", ls=styles[i], label=name) for i, name in enumerate(_seed_names(seeds))]
    elif n_runs >= 3:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, label=f"± std over {_runs_label(n_runs)}"))
    elif n_runs > 1:
        handles.append(Line2D([], [], color="0.3", label=f"mean of {_runs_label(n_runs)}"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean rank per matrix")
    plain_ticks(ax)
    ax.set_title("Rank per matrix type (at mask steps)", fontsize=10)
    ax.legend(handles=handles, fontsize=7, ncol=2)
    return ax


def _marker(measured: pd.DataFrame) -> Optional[str]:
    """Small dots at the recorded steps where they are few enough to tell apart; a plain line otherwise."""
    return "o" if len(measured) <= 60 else None


def budget_schedule(measured: pd.DataFrame, formula: pd.DataFrame, *, per_run: Optional[pd.DataFrame] = None,
                    ax: Optional[Axes] = None) -> Axes:
    """Total kept rank b(t): the formula of PAPERS.md as a line on top, the measured kept rank (Σ non-zero λ,
    mean over runs) as a thin line with small markers under it, its min–max over runs shaded where they
    differ, from 3 runs. ``per_run`` (:func:`analysis.ranks.budget_per_run`), when given and from 2 runs, is
    drawn as one line per run instead of the mean and the shading."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    n = int(measured["n"].max()) if "n" in measured and len(measured) else 1
    lines = _run_lines(per_run, n)
    if lines is not None:
        for i, ((_, run), name) in enumerate(zip(lines.groupby("run_dir", sort=True), _seed_names(lines))):
            ax.plot(run["step"], run["kept"], color="#d62728", lw=0.8, ls=("-", "--")[i % 2], marker=_marker(run),
                    ms=1.8, alpha=0.8, drawstyle="steps-post", zorder=2, label=f"measured, Σ non-zero λ, {name}")
    else:
        label = "measured, Σ non-zero λ" + (f" (mean of {_runs_label(n)})" if n > 1 else "")
        ax.plot(measured["step"], measured["kept_mean"], color="#d62728", lw=0.8, marker=_marker(measured), ms=1.8,
                alpha=0.8, drawstyle="steps-post", zorder=2, label=label)
    if n >= 3 and (measured["kept_max"] > measured["kept_min"]).any():
        ax.fill_between(measured["step"], measured["kept_min"], measured["kept_max"], color="#d62728", alpha=0.2,
                        lw=0, step="post", label=f"min–max over {_runs_label(n)}")
    if not formula.empty:
        ax.plot(formula["step"], formula["formula"], color="black", lw=1.0, ls="--", zorder=3,
                label="b(t), formula (cubic schedule)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("total rank b(t) (kept singular values)")
    plain_ticks(ax)
    ax.set_title("Budget schedule: formula and measured", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def budget_residual(measured: pd.DataFrame, *, per_run: Optional[pd.DataFrame] = None,
                    ax: Optional[Axes] = None) -> Axes:
    """Measured minus formula at each recorded step (``kept_mean − formula``; from 3 runs their min and max
    shaded where they differ; from 2 runs with ``per_run`` given, one line per run): 0 when PEFT's masking keeps
    exactly the scheduled budget."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2))
    n = int(measured["n"].max()) if "n" in measured and len(measured) else 1
    lines = _run_lines(per_run, n)
    ax.axhline(0, color="black", lw=0.8, ls="--", label="formula (0)")
    if lines is not None:
        for i, ((_, run), name) in enumerate(zip(lines.groupby("run_dir", sort=True), _seed_names(lines))):
            ax.plot(run["step"], run["kept"] - run["formula"], color="#d62728", lw=0.8, ls=("-", "--")[i % 2],
                    marker=_marker(run), ms=1.8, drawstyle="steps-post", label=f"measured − formula, {name}")
    else:
        ax.plot(measured["step"], measured["kept_mean"] - measured["formula"], color="#d62728", lw=0.8,
                marker=_marker(measured), ms=1.8, drawstyle="steps-post", label="measured − formula")
    if n >= 3 and (measured["kept_max"] > measured["kept_min"]).any():
        ax.fill_between(measured["step"], measured["kept_min"] - measured["formula"],
                        measured["kept_max"] - measured["formula"], color="#d62728", alpha=0.2, lw=0, step="post",
                        label="min–max over runs")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("residual (rank)")
    plain_ticks(ax)
    ax.legend(fontsize=7)
    return ax


def figure3(mean: pd.DataFrame, std: Optional[pd.DataFrame], n: Optional[pd.DataFrame], *, title: str = "",
            vmax: Optional[float] = None) -> Figure:
    """The paper's Figure 3 alone (the verdict's numbers go beside it as a table file); returns the Figure."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * mean.shape[1] + 2.5), 0.55 * mean.shape[0] + 1.6),
                           constrained_layout=True)
    rank_heatmap(mean, std, n, ax=ax, title=title, vmax=vmax)
    return fig


def time_figure(curves: pd.DataFrame, measured: pd.DataFrame, formula: pd.DataFrame, *,
                per_run: Optional[pd.DataFrame] = None, budget_runs: Optional[pd.DataFrame] = None,
                target: Optional[float] = None, init: Optional[float] = None, suptitle: str = "") -> Figure:
    """Rank over time per matrix type (left), and the budget schedule over its residual panel (right);
    ``per_run`` (ranks) and ``budget_runs`` (kept rank) per run: one line per run below 3 runs."""
    fig, axd = plt.subplot_mosaic([["rank", "budget"], ["rank", "residual"]], figsize=(11, 4.6),
                                  height_ratios=[2.2, 1], constrained_layout=True)
    rank_over_time(curves, per_run=per_run, ax=axd["rank"], target=target, init=init)
    budget_schedule(measured, formula, per_run=budget_runs, ax=axd["budget"])
    axd["budget"].sharex(axd["residual"])
    axd["budget"].set_xlabel("")
    budget_residual(measured, per_run=budget_runs, ax=axd["residual"])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
