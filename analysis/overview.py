"""One page at a sweep's end: per (model, task), the main metric of each configuration (mean with its
interval over seeds from 3 seeds on; below 3, each seed's value), the parameters it trained and its train
time — the numbers of :func:`analysis.compare.compare`, drawn.

:func:`write_overview` writes it beside the sweep's summary.md as ``<sweep>/summary.png`` (the harness calls it
when a sweep ends: harness/summaries.py); the HTML report (analysis/report.py) opens on the same figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from analysis import compare
from analysis.labels import method_label, metric_label, task_label
from analysis.plots.style import method_styles, model_label, plain_ticks

log = logging.getLogger(__name__)

#: the overview's file name in a sweep folder (beside summary.md)
OVERVIEW_FILE = "summary.png"
#: below this many seeds a configuration shows each seed, not an interval (2 seeds give t₀.₉₇₅ = 12.7)
MIN_SEEDS_FOR_INTERVAL = 3


def _rows(long: pd.DataFrame) -> list[str]:
    """The configurations' labels, top to bottom (compare()'s order)."""
    return [method_label(r["method"], r["budget"], r["variant"], label=r.get("method_label"))
            for _, r in long.iterrows()]


def _metric_panel(ax: Any, long: pd.DataFrame, seeds: pd.DataFrame, colors: list[Any]) -> None:
    """Mean ± interval per configuration (n ≥ 3), else each seed's value as an open marker and the mean."""
    y = np.arange(len(long))[::-1]
    for yi, (_, r), color in zip(y, long.iterrows(), colors):
        if r["n"] >= MIN_SEEDS_FOR_INTERVAL and np.isfinite(r["low"]):
            ax.errorbar(r["mean"], yi, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="o",
                        color=color, capsize=3, ms=6)
        else:
            mine = seeds[(seeds["method"] == r["method"]) & (seeds["budget"].astype(str) == str(r["budget"]))
                         & (seeds["variant"] == r["variant"])]
            ax.scatter(mine["value"], np.full(len(mine), yi), s=28, facecolors="none", edgecolors=color, zorder=3)
            ax.scatter([r["mean"]], [yi], marker="|", s=200, color=color, zorder=3)
    metric = str(long["metric"].iloc[0])
    ax.set_xlabel(f"{metric_label(metric)} (dev)")
    ax.grid(axis="x", alpha=0.3)


def _bar_panel(ax: Any, values: pd.Series, colors: list[Any], label: str, log_scale: bool, fmt: Any) -> None:
    """One bar per configuration with its value written at the end; ``–`` where unknown."""
    y = np.arange(len(values))[::-1]
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    known = np.isfinite(v) & (v > 0 if log_scale else True)
    ax.barh(y[known], v[known], color=np.asarray(colors, dtype=object)[known].tolist(), alpha=0.8)
    for yi, vi, ok in zip(y, v, known):
        ax.text(vi if ok else 0, yi, f" {fmt(vi)}" if ok else " –", va="center", fontsize=7)
    if log_scale and known.any():
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)


def _params(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}K" if v >= 1e3 else f"{v:.0f}"


def overview_figure(runs: pd.DataFrame, *, metric: Optional[str] = None, which: str = "final",
                    confidence: float = 0.95) -> tuple[Any, pd.DataFrame]:
    """The figure (one row of three panels per (model, task): metric, parameters trained, train time) and the
    data it draws: one row per configuration (``seed`` empty; mean, low, high, n, trainable_params,
    train_seconds) and one per run of a configuration with fewer than 3 seeds (``seed``, ``value``)."""
    import matplotlib.pyplot as plt

    long = compare.compare(runs, metric=metric, which=which, confidence=confidence)  # type: ignore[arg-type]
    seeds = compare.seed_values(runs, metric=metric, which=which)  # type: ignore[arg-type]
    groups = list(long.groupby(["model", "task"], sort=False))
    height = sum(0.42 * len(g) + 1.1 for _, g in groups) + 0.8
    fig, axes = plt.subplots(len(groups), 3, figsize=(12, height), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1, 1]},
                             height_ratios=[len(g) + 2 for _, g in groups])
    frames = []
    for (model, task), row_axes, (_, g) in zip([k for k, _ in groups], axes, groups):
        styles = method_styles(g, palette="tab20")
        colors = [styles[str(m)][1] for m in g["method"]]
        mine = seeds[(seeds["model"] == model) & (seeds["task"] == task)]
        _metric_panel(row_axes[0], g, mine, colors)
        _bar_panel(row_axes[1], g["trainable_params"], colors, "parameters trained (log)", True, _params)
        _bar_panel(row_axes[2], g["train_seconds"], colors, "train time per run (s, mean)", False,
                   lambda v: f"{v:.0f}s" if v >= 10 else f"{v:.1f}s")
        labels = _rows(g)
        plain_ticks(row_axes[2])
        for i, ax in enumerate(row_axes):
            ax.set_yticks(np.arange(len(g))[::-1], labels if i == 0 else [""] * len(g))
            ax.set_ylim(-0.7, len(g) - 0.3)
        ns = sorted({int(n) for n in g["n"]})
        n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        row_axes[0].set_title(f"{task_label(task)} · {model_label(model)} · {n_text} seed(s)", fontsize=10,
                              loc="left")
        few = g[g["n"] < MIN_SEEDS_FOR_INTERVAL]
        few_seeds = mine.merge(few[["method", "budget", "variant"]], on=["method", "budget", "variant"])
        frames += [g.assign(seed=np.nan, value=np.nan), few_seeds]
    fig.suptitle(f"{len(runs)} runs, {len(long)} configurations: mean over seeds with its {confidence * 100:g}% "
                 f"interval (t; bounded metrics on the logit scale); below {MIN_SEEDS_FOR_INTERVAL} seeds each "
                 f"seed (○) and the mean (|)", fontsize=9)
    fig.tight_layout()
    cols = ["model", "task", "method", "budget", "variant", "metric", "mean", "low", "high", "n",
            "trainable_params", "train_seconds", "seed", "value"]
    data = pd.concat([f.reindex(columns=cols) for f in frames], ignore_index=True)
    return fig, data


def write_overview(sweep_dir: Path, *, dpi: int = 110) -> Optional[Path]:
    """Draw the finished runs of ``sweep_dir`` (:func:`overview_figure`) into ``<sweep_dir>/summary.png``;
    None, and nothing written, when no run there is finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis import inputs

    runs, _, _ = inputs.load_inputs([sweep_dir])
    if runs.empty or compare.compare(runs).empty:
        return None
    fig, _ = overview_figure(runs)
    path = Path(sweep_dir) / OVERVIEW_FILE
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", path)
    return path
