"""Figures of the weight-analysis suite (:mod:`analysis.spectra`): a measure against rank or lr per method, ΔW's
spectrum (normalised singular values, cumulative energy), subspace-similarity heatmaps, measures over training.

Each ``*_figure`` function takes the tables of the compute step and returns (Figure, the data it draws). Colours
are the runs' recorded method colours (:func:`analysis.plots.style.method_styles`). Seeds are the unit: a point is
the mean over seeds of each run's value (the mean over its matrices) with a Student-t interval from 3 seeds on;
below 3 seeds each seed's value is drawn instead. Nothing here writes files.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from analysis import stats as S
from analysis.plots.style import method_styles, plain_ticks, scaled_label
from analysis.spectra import MEASURES, condition_labels

#: axis labels of the measures
LABELS: dict[str, str] = {"intruders": "intruder dimensions per matrix", "effective_rank": "effective rank of ΔW (90%)",
                          "stable_rank": "stable rank of ΔW", "amplification": "amplification factor",
                          "w0_alignment": "ΔW energy in W0's top-r subspace", "dW_rank": "rank of ΔW",
                          "dW_fro": "‖ΔW‖_F"}
LINESTYLES = ("-", "--", ":", "-.")


def _seed_stats(values: pd.Series) -> tuple[float, float, float, int]:
    iv = S.t_interval(values.dropna())
    return iv.mean, iv.low, iv.high, iv.n


def measure_vs(per_run: pd.DataFrame, measure: str, x: str) -> tuple[Any, pd.DataFrame]:
    """``measure`` (a column of :func:`analysis.spectra.per_run`) against ``x`` (``budget`` or ``lr``): one line per
    method and value of the other setting; a method without that setting (full FT has no budget) is a dashed
    horizontal line at its mean. Returns the figure and its data (one row per point)."""
    import matplotlib.pyplot as plt

    other = "lr" if x == "budget" else "budget"
    styles = method_styles(per_run)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    rows = []
    for (method, o), g in per_run.groupby([per_run["method"].astype(str), per_run[other].fillna(-1)], sort=False):
        label, color = styles[method]
        label += "" if o == -1 else (f" r={int(o)}" if other == "budget" else f" lr={o:g}")
        pts = [(xv, *_seed_stats(gx[measure])) for xv, gx in g.groupby(x)]
        for xv, mean, lo, hi, n in pts:
            rows.append({"method": method, "label": label, x: xv, "mean": mean, "low": lo, "high": hi, "seeds": n})
        if g[x].isna().all():
            ax.axhline(_seed_stats(g[measure])[0], color=color, ls="--", lw=1.2, label=f"{label} (no {x})")
            rows.append({"method": method, "label": label, x: math.nan, "mean": _seed_stats(g[measure])[0],
                         "seeds": g["seed"].nunique()})
            continue
        xs, means = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, means, marker="o", color=color, label=label)
        for (xv, mean, lo, hi, n), (_, gx) in zip(pts, g.groupby(x)):
            if n >= 3 and math.isfinite(lo):
                ax.errorbar([xv], [mean], yerr=[[mean - lo], [hi - mean]], color=color, capsize=3)
            else:
                ax.scatter([xv] * len(gx), gx[measure], facecolors="none", edgecolors=color, s=18)
    if x == "lr":
        ax.set_xscale("log")
    ax.set_xlabel("learning rate" if x == "lr" else "rank r (budget)")
    ax.set_ylabel(LABELS.get(measure, measure))
    ax.set_title(f"{LABELS.get(measure, measure)} vs {'lr' if x == 'lr' else 'rank'}, final step")
    ax.legend(fontsize=7)
    plain_ticks(ax)
    return fig, pd.DataFrame(rows)


def spectrum_figure(spectrum: pd.DataFrame, runs: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """ΔW's spectrum at the final step per configuration: σ_i/σ_1 (log scale) and the cumulative energy
    Σ_{j≤i} σ_j² / Σ σ_j², each the mean over matrices and seeds."""
    import matplotlib.pyplot as plt

    s = spectrum.copy()
    s["norm"] = s["sigma"] / s.groupby(["run_dir", "matrix"])["sigma"].transform("max")
    s["energy"] = (s["sigma"] ** 2).groupby([s["run_dir"], s["matrix"]]).cumsum() / \
        (s["sigma"] ** 2).groupby([s["run_dir"], s["matrix"]]).transform("sum")
    labels = dict(zip(runs["run_dir"], condition_labels(runs)))
    s["label"] = s["run_dir"].map(labels)
    data = s.groupby(["label", "method", "i"], sort=False)[["norm", "energy"]].mean().reset_index()
    styles = method_styles(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for n, (label, g) in enumerate(data.groupby("label", sort=False)):
        _, color = styles[str(g["method"].iloc[0])]
        ls = LINESTYLES[n % len(LINESTYLES)]
        pos = g[g["norm"] > 0]
        axes[0].plot(pos["i"], pos["norm"], color=color, ls=ls, label=label)
        axes[1].plot(g["i"], g["energy"], color=color, ls=ls, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("σ_i / σ_1 of ΔW")
    axes[1].set_ylabel("cumulative energy Σσ²")
    axes[1].axhline(0.9, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("singular value index i")
    axes[1].legend(fontsize=7)
    fig.suptitle("Spectrum of ΔW at the final step (mean over matrices and seeds)")
    return fig, data


def similarity_matrix(sims: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The heatmap table of one kind of pair (mean φ over matrices and pairs): ``seed``: rows and columns
    ``<configuration> s<seed>``; ``rank``: configurations of one method at two budgets; ``reference``: rows the
    configurations, columns the matrix types (φ to the reference of the same seed)."""
    k = sims[sims["kind"] == kind]
    if kind == "reference":
        return k.pivot_table(index="cond_a", columns="type", values="phi", aggfunc="mean")
    a = k["cond_a"] + ("" if kind == "rank" else " s" + k["seed_a"].astype(str))
    b = k["cond_b"] + ("" if kind == "rank" else " s" + k["seed_b"].astype(str))
    both = pd.concat([pd.DataFrame({"x": a, "y": b, "phi": k["phi"]}), pd.DataFrame({"x": b, "y": a, "phi": k["phi"]})])
    m = both.pivot_table(index="x", columns="y", values="phi", aggfunc="mean")
    for c in m.index.union(m.columns):  # φ of a ΔW with itself is 1
        m.loc[c, c] = 1.0
    return m.sort_index().sort_index(axis=1)


def heatmap_figure(matrix: pd.DataFrame, title: str) -> tuple[Any, pd.DataFrame]:
    """One heatmap of φ ∈ [0, 1] with the values written in the cells."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * matrix.shape[1] + 2.5, 1.2 + 0.4 * matrix.shape[0]),
                           constrained_layout=True)
    im = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
    for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="subspace similarity φ")
    ax.set_title(title, fontsize=9)
    return fig, matrix.reset_index().melt(id_vars=matrix.index.name or "index", var_name="column", value_name="phi")


def steps_figure(measures: pd.DataFrame, runs: pd.DataFrame, names: Optional[list[str]] = None) -> tuple[Any, pd.DataFrame]:
    """Each measure over the snapshot steps, one panel per measure, one line per configuration (mean over seeds
    of each run's mean over matrices; a band for the t-interval from 3 seeds on, else one thin line per seed)."""
    import matplotlib.pyplot as plt

    names = names or list(MEASURES)
    labels = dict(zip(runs["run_dir"], condition_labels(runs)))
    per = measures.groupby(["run_dir", "method", "seed", "step", "measure"], sort=False)["value"].mean().reset_index()
    per["label"] = per["run_dir"].map(labels)
    styles = method_styles(runs)
    cols = min(3, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(4.2 * cols, 3.2 * math.ceil(len(names) / cols)),
                             constrained_layout=True, squeeze=False)
    rows = []
    for ax, name in zip(axes.flat, names):
        sub = per[per["measure"] == name]
        ylabel, factor = scaled_label(LABELS.get(name, name), sub["value"])
        for n, (label, g) in enumerate(sub.groupby("label", sort=False)):
            _, color = styles[str(g["method"].iloc[0])]
            st = [(step, *_seed_stats(gs["value"])) for step, gs in g.groupby("step")]
            for step, mean, lo, hi, k in st:
                rows.append({"measure": name, "label": label, "step": step, "mean": mean, "low": lo, "high": hi, "seeds": k})
            ax.plot([t[0] for t in st], [t[1] / factor for t in st], color=color, ls=LINESTYLES[n % 4], label=label)
            if all(t[4] >= 3 for t in st):
                ax.fill_between([t[0] for t in st], [t[2] / factor for t in st], [t[3] / factor for t in st],
                                color=color, alpha=0.15)
            else:
                for _, gs in g.groupby("seed"):
                    ax.plot(gs["step"], gs["value"] / factor, color=color, lw=0.5, alpha=0.6)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel, fontsize=8)
        plain_ticks(ax)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Measures over training (mean over matrices, then over seeds)")
    return fig, pd.DataFrame(rows)
