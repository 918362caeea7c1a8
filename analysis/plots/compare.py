"""Methods compared, drawn: Pareto plots (metric vs parameters / time / memory, frontier, seed error
bars) and learning curves (eval metric vs step, mean ± interval band over seeds). Below 3 seeds no interval
is drawn: each seed's own value (or curve) instead, from :func:`analysis.compare.seed_values` /
:func:`analysis.compare.curve_points`.

Inputs are the frames of :mod:`analysis.compare` (:func:`~analysis.compare.compare` and
:func:`~analysis.compare.curves`). Every function takes ``ax=None`` (or ``axes=None``), draws, and returns
the Axes; nothing is written here.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.compare import pareto_front
from analysis.labels import MEMORY_KINDS, method_display, method_label, method_order_key, metric_label, task_label
from analysis.plots.style import first, legend_below, method_marker, method_styles, plain_ticks, setup_line

#: x axes of the Pareto plots: column → (label, scale factor, log axis, lower is better)
X_AXES: dict[str, tuple[str, float, bool, bool]] = {
    "trainable_params": ("trainable parameters", 1.0, True, True),
    "effective_params": ("effective parameters", 1.0, True, True),
    "train_seconds": ("train time (s)", 1.0, False, True),
    "peak_memory_bytes": ("peak memory (GiB)", 1 / 2**30, False, True),
    "tokens_per_s": ("tokens / s", 1.0, False, False),
}


def method_color(method: str, others: Sequence[str] = ()) -> Any:
    """A fixed colour for the four harness methods; other methods (PEFT files) take tab20 in order."""
    return method_styles(pd.DataFrame({"method": list(dict.fromkeys([*others, method]))}), palette="tab20")[method][1]


def _budget_suffix(method: Any, budget: Any, variant: Any, rows: Optional[pd.DataFrame] = None) -> str:
    """`` r=8 (variant)``: what :func:`analysis.labels.method_label` adds after the method's name."""
    return method_label(method, budget, variant, rows=rows)[len(method_label(method, rows=rows)):]


def _select(df: pd.DataFrame, task: Optional[str], model: Optional[str]) -> pd.DataFrame:
    d = df
    if task is not None and "task" in d:
        d = d[d["task"] == task]
    if model is not None and "model" in d:
        d = d[d["model"] == model]
    return d


def _short_label(r: pd.Series) -> str:
    b = r.get("budget")
    symbol = method_display(r["method"], pd.DataFrame([r]))["method_budget_symbol"]
    lab = "" if b is None or pd.isna(b) else f"{symbol}={int(b)}"
    if r.get("variant"):
        lab = f"{lab} {r['variant']}".strip()
    return lab


def _legend(ax: Axes, n: int) -> None:
    """Inside the axes for a few entries, outside on the right for many."""
    if n <= 8:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if n <= 24 else 2, borderaxespad=0)


def pareto(long: pd.DataFrame, *, x: str = "trainable_params", task: Optional[str] = None,
           model: Optional[str] = None, ax: Optional[Axes] = None, annotate: Optional[bool] = None,
           frontier: bool = True, legend: bool = True, seeds: Optional[pd.DataFrame] = None) -> Axes:
    """Metric (mean over seeds, error bar = the table's interval) vs ``x`` for one task, one point per
    (method, budget, variant), coloured by method; the Pareto frontier (no point is better in both) as
    a dashed step line. ``x``: a key of :data:`X_AXES` (parameters are drawn on a log axis). Below 3 seeds
    a configuration gets no error bar (2 seeds give t₀.₉₇₅ = 12.7): ``seeds`` (the per-seed values,
    :func:`analysis.compare.seed_values`), when given, is drawn instead as one small open marker per seed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    axis_label, factor, logx, x_lower = X_AXES[x]
    d = _select(long, task, model)
    d = d[pd.to_numeric(d.get(x), errors="coerce").notna() & d["mean"].notna()] if x in d else d.iloc[0:0]
    if d.empty:
        ax.text(0.5, 0.5, f"no {axis_label} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    xs = pd.to_numeric(d[x]).to_numpy(float) * factor
    ys = d["mean"].to_numpy(float)
    lo = np.where(np.isfinite(d["low"].to_numpy(float)), ys - d["low"].to_numpy(float), 0.0)
    hi = np.where(np.isfinite(d["high"].to_numpy(float)), d["high"].to_numpy(float) - ys, 0.0)
    styles = method_styles(d, palette="tab20")
    few = pd.to_numeric(d["n"], errors="coerce").fillna(1).to_numpy() < 3 if "n" in d else np.zeros(len(d), bool)
    per_seed = _select(seeds, task, model) if seeds is not None else None
    seen: set[str] = set()
    seeds_drawn = False
    for i, (_, r) in enumerate(d.iterrows()):
        m = r["method"]
        label, color = styles[str(m)]
        ax.errorbar(xs[i], ys[i], yerr=None if few[i] else [[lo[i]], [hi[i]]], fmt=method_marker(m, d), ms=6,
                    capsize=3, color=color, label=label if m not in seen else None, zorder=3)
        seen.add(m)
        mine = _same_config(per_seed, m, r.get("budget"), r.get("variant")) if few[i] else None
        if mine is not None and not mine.empty:
            ax.scatter(np.full(len(mine), xs[i]), mine["value"].to_numpy(float), s=16, facecolors="none",
                       edgecolors=color, lw=0.8, zorder=3,
                       label=None if seeds_drawn else "one seed (configurations with n < 3)")
            seeds_drawn = True
    hib = bool(d["higher_is_better"].iloc[0])
    on = pareto_front(xs, ys, x_lower=x_lower, y_higher=hib)
    if frontier and on.sum() >= 1:
        order = np.argsort(xs[on])
        fx, fy = xs[on][order], ys[on][order]
        ax.plot(fx, fy, ls="--", color="0.4", lw=1.2, drawstyle="steps-post" if x_lower == hib else "steps-pre",
                label="Pareto frontier", zorder=2)
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="0.3", lw=1, zorder=4)
    if annotate is None:
        annotate = len(d) <= 16
    for i, (_, r) in enumerate(d.iterrows()):
        if annotate or on[i]:
            lab = _short_label(r)
            if lab:
                ax.annotate(lab, (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if logx:
        ax.set_xscale("log")
    metric = str(d["metric"].iloc[0])
    ax.set_xlabel(axis_label + (" (log)" if logx else ""))
    if x == "peak_memory_bytes" and "peak_memory_kind" in d:
        kinds = {MEMORY_KINDS.get(k, k) for k in ",".join(d["peak_memory_kind"].dropna()).split(",") if k}
        if kinds:
            ax.set_xlabel(f"{axis_label}, {', '.join(sorted(kinds))}")
    ax.set_ylabel(f"{metric_label(metric)} (mean over seeds)")
    title = task_label(d["task"].iloc[0]) if "task" in d else ""
    ax.set_title(title, fontsize=10)
    plain_ticks(ax)
    ax.grid(alpha=0.3)
    if legend:
        _legend(ax, len(seen) + int(frontier) + int(seeds_drawn))
    return ax


def learning_curves(curves: pd.DataFrame, *, task: Optional[str] = None, model: Optional[str] = None,
                    ax: Optional[Axes] = None, band: bool = True, legend: bool = True,
                    seeds: Optional[pd.DataFrame] = None) -> Axes:
    """Eval metric vs step for one task: one line per (method, budget, variant) = mean over seeds, with a
    band = the interval over seeds at each step where at least 3 seeds logged it. Below 3 seeds an
    interval is meaningless (2 seeds give t₀.₉₇₅ = 12.7): ``seeds`` (the per-seed points: the keys, seed,
    step, value), when given, is drawn as one thin line per seed instead; without it only the mean."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    d = _select(curves, task, model)
    if d.empty:
        ax.text(0.5, 0.5, "no eval steps logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    keys = ["method", "budget", "variant"]
    per_seed = _select(seeds, task, model) if seeds is not None else None
    groups = list(d.groupby(keys, dropna=False, sort=False))
    groups.sort(key=lambda kv: (*method_order_key(kv[0][0], d),
                                -1 if kv[0][1] is None or pd.isna(kv[0][1]) else kv[0][1], str(kv[0][2])))
    line_styles = ["-", "--", ":", "-."]
    styles = method_styles(d, palette="tab20")
    per_method: dict[str, int] = {}
    for (m, b, v), g in groups:
        g = g.sort_values("step")
        k = per_method.setdefault(m, 0)
        per_method[m] = k + 1
        label, color = styles[str(m)]
        label += _budget_suffix(m, None if b is None or pd.isna(b) else b, v, d)
        n = int(g["n"].max())
        few = n < 3
        mine = _same_config(per_seed, m, b, v) if few and per_seed is not None else None
        if mine is not None and not mine.empty:
            for i, (_, run) in enumerate(mine.sort_values("step").groupby("seed", sort=True)):
                ax.plot(run["step"], run["value"], ls=line_styles[k % len(line_styles)], color=color, lw=0.9,
                        alpha=0.8, label=(f"{label}, one line per seed (n={n})" if n > 1 else f"{label} (n=1)")
                        if i == 0 else None)
            continue
        note = f"n={n}" + (", no interval" if 1 < n < 3 and band else "")
        ax.plot(g["step"], g["mean"], ls=line_styles[k % len(line_styles)], color=color, lw=1.5, marker=".",
                label=f"{label} ({note})")
        if band and not few:
            ok = g["low"].notna() & g["high"].notna()
            if ok.any():
                ax.fill_between(g.loc[ok, "step"], g.loc[ok, "low"], g.loc[ok, "high"], color=color, alpha=0.15, lw=0)
    metric = str(d["metric"].iloc[0])
    ax.set_xlabel("step")
    ax.set_ylabel(f"eval {metric_label(metric)}")
    ax.set_title(task_label(d["task"].iloc[0]) if "task" in d else "", fontsize=10)
    plain_ticks(ax)
    ax.grid(alpha=0.3)
    if legend:
        _legend(ax, len(groups))
    return ax


def _same_config(frame: Optional[pd.DataFrame], method: Any, budget: Any, variant: Any) -> Optional[pd.DataFrame]:
    """The rows of ``frame`` for one (method, budget, variant); a missing budget or variant matches missing."""
    if frame is None:
        return None
    sel = frame["method"] == method
    if "budget" in frame:
        sel &= frame["budget"].isna() if budget is None or pd.isna(budget) else frame["budget"] == budget
    if "variant" in frame:
        sel &= frame["variant"].fillna("") == (variant if isinstance(variant, str) else "")
    return frame[sel]


def _shared_legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure from the labelled artists of all its panels (each label once)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        legend_below(fig, list(handles.values()), ncol=min(len(handles), 4))


def _suptitle(fig: Figure, frame: pd.DataFrame, what: str) -> None:
    """``what · model · task · seeds``, each part only where every row shares it."""
    setup = setup_line(model=first(frame, "model"), task=first(frame, "task"), seeds=first(frame, "n"))
    fig.suptitle(f"{what} · {setup}" if setup else what, fontsize=10)


def pareto_data(long: pd.DataFrame, *, task: Optional[str] = None, model: Optional[str] = None,
                seeds: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The rows a :func:`pareto_figure` of ``task`` / ``model`` draws (to write beside it as CSV): the
    configurations (``seed`` empty) and, where given, the per-seed values it draws (configurations with
    fewer than 3 seeds; the value in ``mean``)."""
    d = _select(long, task, model)
    parts = [d]
    if seeds is not None:
        few = d[pd.to_numeric(d["n"], errors="coerce").fillna(1) < 3] if "n" in d else d
        s = _select(seeds, task, model).rename(columns={"value": "mean"})
        parts.append(s.merge(few[[k for k in ("model", "task", "method", "budget", "variant") if k in few]],
                             how="inner"))
    return pd.concat(parts, ignore_index=True)


def curves_data(curves: pd.DataFrame, *, tasks: Optional[Sequence[str]] = None, model: Optional[str] = None,
                seeds: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The rows a :func:`curves_figure` draws: the means (``seed`` empty) and, where given, the per-seed points."""
    d = _select(curves, None, model)
    parts = [d[d["task"].isin(tasks)] if tasks is not None else d]
    if seeds is not None:
        s = _select(seeds, None, model)
        parts.append((s[s["task"].isin(tasks)] if tasks is not None else s).rename(columns={"value": "mean"}))
    return pd.concat(parts, ignore_index=True)


def pareto_figure(long: pd.DataFrame, *, task: Optional[str] = None, model: Optional[str] = None,
                  xs: Sequence[str] = ("trainable_params", "train_seconds", "peak_memory_bytes"),
                  seeds: Optional[pd.DataFrame] = None) -> Figure:
    """One row of Pareto plots for one task: metric vs each of ``xs``, one legend for the figure (see
    :func:`pareto` for ``seeds``)."""
    fig, axes = plt.subplots(1, len(xs), figsize=(5.0 * len(xs), 4.6), squeeze=False, constrained_layout=True)
    for x, ax in zip(xs, axes[0]):
        pareto(long, x=x, task=task, model=model, ax=ax, legend=False, seeds=seeds)
    _shared_legend(fig, axes[0])
    _suptitle(fig, _select(long, task, model), "Score against cost")
    return fig


def curves_figure(curves: pd.DataFrame, *, tasks: Optional[Sequence[str]] = None, model: Optional[str] = None,
                  seeds: Optional[pd.DataFrame] = None) -> Figure:
    """Learning curves side by side, one panel per task (see :func:`learning_curves` for ``seeds``)."""
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2), squeeze=False,
                             constrained_layout=True)
    for t, ax in zip(tasks, axes[0]):
        learning_curves(curves, task=t, model=model, ax=ax, seeds=seeds)
    shown = _select(curves, tasks[0] if len(tasks) == 1 else None, model)
    _suptitle(fig, shown, "Learning curves")
    return fig
