"""AdaLoRA figures: the paper's Figure 3 rank heatmap (mean ± spread over seeds), small multiples over
steps, rank over time per matrix type, the budget schedule (measured vs formula) and the verdict table.

Every function takes ``ax=None`` (or ``axes=None``), draws, and returns the Axes; nothing is written here.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from harness.families import MATRIX_TYPES  # noqa: E402

TYPE_COLORS = dict(zip(MATRIX_TYPES, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")))
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
    ax.set_xticks(range(mean.shape[1]), [str(int(c) + 1) for c in mean.columns])
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
        ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="rank")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def rank_heatmap_grid(tables: Sequence[tuple[str, pd.DataFrame, Optional[pd.DataFrame], Optional[pd.DataFrame]]], *,
                      axes: Optional[Sequence[Axes]] = None, vmax: Optional[float] = None,
                      ncols: int = 2) -> list[Axes]:
    """Small multiples: one :func:`rank_heatmap` per (title, mean, std, n), on a shared colour scale."""
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
    for ax, (title, mean, std, n) in zip(axes, tables):
        rank_heatmap(mean, std, n, ax=ax, vmax=vmax, title=title, colorbar=False, fontsize=6)
    return list(axes[: len(tables)])


def rank_over_time(curves: pd.DataFrame, *, ax: Optional[Axes] = None, target: Optional[float] = None,
                   init: Optional[float] = None) -> Axes:
    """Mean rank per matrix of each type (lines, ± std over runs shaded) against the optimizer step.
    ``curves`` has columns step, type, mean, std (:func:`analysis.ranks.rank_over_time`)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for t, sub in curves.groupby("type", observed=True, sort=True):
        c = TYPE_COLORS.get(str(t))
        ax.step(sub["step"], sub["mean"], where="post", label=str(t), color=c, lw=1.5)
        if sub["std"].notna().any():
            ax.fill_between(sub["step"], sub["mean"] - sub["std"].fillna(0), sub["mean"] + sub["std"].fillna(0),
                            step="post", color=c, alpha=0.15, lw=0)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=1, label="b(T)/n")
    if init is not None:
        ax.axhline(init, color="grey", ls="--", lw=0.8, label="b(0)/n")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean rank per matrix")
    ax.set_title("rank over time per matrix type (at mask steps)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return ax


def budget_schedule(measured: pd.DataFrame, formula: pd.DataFrame, *, ax: Optional[Axes] = None) -> Axes:
    """Total kept rank at each mask step (dots, min–max over runs) over b(t) of the formula (line)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    if not formula.empty:
        ax.plot(formula["step"], formula["formula"], color="black", lw=1.2, label="b(t), formula (PAPERS.md)")
    err = np.vstack([measured["kept_mean"] - measured["kept_min"], measured["kept_max"] - measured["kept_mean"]])
    ax.errorbar(measured["step"], measured["kept_mean"], yerr=err, fmt="o", ms=3, color="#d62728", lw=0.8,
                label="kept rank, measured (Σ non-zero λ)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("total rank b(t)")
    ax.set_title("budget schedule: measured vs formula", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def verdict_table(summary: pd.DataFrame, line: str, *, ax: Optional[Axes] = None,
                  types: Sequence[str] = MATRIX_TYPES) -> Axes:
    """The figure's table: mean rank per matrix, share of the final budget and the top-minus-bottom-third
    rank difference, per matrix type, for FFN vs attention and top vs bottom third (mean ± half-width of the
    Student-t interval over runs), with the one-line verdict as its title.
    ``summary`` is :func:`analysis.ranks.summarize_shares` (index = column names of the shares)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")

    def cell(key: str, pct: bool = False) -> str:
        if key not in summary.index or summary.loc[key, "mean"] != summary.loc[key, "mean"]:
            return "–"
        m, k = summary.loc[key, "mean"], summary.loc[key, "n"]
        s = (summary.loc[key, "high"] - summary.loc[key, "low"]) / 2 if "high" in summary else float("nan")
        f = 100.0 if pct else 1.0
        txt = f"{f * m:.0f}%" if pct else f"{m:.2f}"
        if k > 1 and s == s:
            txt += f" ±{f * s:.0f}" if pct else f" ±{s:.2f}"
        return txt

    cols = [t for t in types if f"mean_{t}" in summary.index and pd.notna(summary.loc[f"mean_{t}", "mean"])]
    header = cols + ["FFN", "attention", "top ⅓", "bottom ⅓"]
    rows = [
        [cell(f"mean_{t}") for t in cols]
        + [cell("ffn_mean"), cell("attn_mean"), cell("top_mean"), cell("bottom_mean")],
        [cell(f"share_{t}", True) for t in cols] + [cell("ffn_share", True), cell("attn_share", True),
                                                    cell("top_share", True), cell("bottom_share", True)],
        [cell(f"topdiff_{t}") for t in cols] + [cell("topdiff_ffn"), cell("topdiff_attn"), "", ""],
    ]
    table = ax.table(cellText=rows, colLabels=header,
                     rowLabels=["mean rank / matrix (± 95% CI)", "share of budget", "top ⅓ − bottom ⅓ (rank)"],
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(-1, len(header))))
    table.scale(1, 1.3)
    ax.set_title("\n".join(textwrap.wrap(line, 120)), fontsize=7.5, loc="left")
    return ax


def figure3(mean: pd.DataFrame, std: Optional[pd.DataFrame], n: Optional[pd.DataFrame], summary: pd.DataFrame,
            line: str, *, title: str = "", vmax: Optional[float] = None) -> Any:
    """Heatmap over the verdict table, one figure (returns the Figure; the CLI saves it)."""
    spread = n is not None and float(np.nanmax(n.to_numpy(dtype=float), initial=1)) > 1
    width = max(9.5 if spread else 7.5, 0.45 * mean.shape[1] + 2.5)  # the table needs room for "mean ±std"
    fig = plt.figure(figsize=(width, 0.55 * mean.shape[0] + 3.6), constrained_layout=True)
    gs = fig.add_gridspec(2, 1, height_ratios=[0.55 * mean.shape[0] + 1.2, 1.9])
    rank_heatmap(mean, std, n, ax=fig.add_subplot(gs[0]), title=title, vmax=vmax)
    verdict_table(summary, line, ax=fig.add_subplot(gs[1]))
    return fig
