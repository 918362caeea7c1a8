"""DoRA's Figure 2: ΔM against ΔD, one panel per method, a point per (layer, checkpoint).

Colour = layer (1-based, as the paper), marker = checkpoint, the least-squares line of each run (one thin
line per seed), and over each panel, in its title, the seed-level r and slope with their intervals and the
verdict (from :func:`analysis.decomposition.correlation_table`). Axis labels carry the scale (``ΔM (×10⁻³)``); a legend
in every panel names the checkpoints and the fit lines. Nothing here writes files.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from analysis.decomposition import ordered_panels, panel_label, pearson_slope
from analysis.plots.style import first, plain_ticks, scaled_label

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def _claim_line(s: Any) -> str:
    """The two answers to the paper's claim: its sign (verdict, p, Holm p) and its value (inside the interval
    or not, p)."""
    def p(v: Any) -> str:
        return "–" if v is None or not math.isfinite(float(v)) else ("<0.001" if float(v) < 0.001 else f"{float(v):.3f}")

    nl = s.get("not_learned") or 0
    return (f"sign {s.get('verdict', '')} (p {p(s.get('p'))}, Holm {p(s.get('p_holm'))}) · value "
            f"{s.get('value', '')} the CI (p {p(s.get('p_value'))})"
            + (f" · {int(nl)} run(s) did not learn" if nl == nl and nl else ""))


def _fmt_iv(v: float, lo: float, hi: float, fmt: str) -> str:
    if not math.isfinite(v):
        return "n/a"
    s = format(v, fmt)
    return s + (f" [{format(lo, fmt)}, {format(hi, fmt)}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def _axis_label(quantity: str, axis: str, values: np.ndarray) -> tuple[str, float]:
    """Axis label with the scale in it (``ΔD (×10⁻³), norms per input feature``) and the factor to divide by."""
    label, factor = scaled_label(quantity, values)
    return f"{label}, norms {'per output feature' if axis == 'out' else 'per input feature'}", factor


def panel_title(points: pd.DataFrame, panel: str) -> str:
    """``LoRA`` / ``FT lr=0.0002``: the data's ``method_label`` where the harness wrote one, else the
    default label of the method, with the panel's split (lr, steps) after it."""
    rest = str(panel).partition(" ")[2]
    label = first(points, "method_label") if len(points) else None
    return (str(label) + (" " + rest if rest else "")) if label else panel_label(panel, points)


def figure_data(points: pd.DataFrame, axis: str = "out") -> pd.DataFrame:
    """What a figure for ``axis`` draws, one row per point: panel, method, seed, layer (1-based, as drawn),
    checkpoint, step, ΔD, ΔM (unscaled)."""
    cols = [c for c in ("panel", "method", "seed", "run_dir", "layer", "checkpoint", "step") if c in points]
    out = points[cols + [f"dD_{axis}", f"dM_{axis}"]].rename(columns={f"dD_{axis}": "dD", f"dM_{axis}": "dM"})
    return out.assign(layer=out["layer"].astype(int) + 1, axis=axis)


def plot_panel(points: pd.DataFrame, *, axis: str = "out", stats: Optional[Mapping[str, Any]] = None,
               ax: Any = None, title: Optional[str] = None, n_layers: Optional[int] = None,
               legend: bool = True) -> Any:
    """One method's panel: x = ΔD, y = ΔM (``axis`` out or in) of ``points`` (rows of
    :func:`analysis.decomposition.decomposition_table`); returns the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.4))
    x, y = points[f"dD_{axis}"].to_numpy(), points[f"dM_{axis}"].to_numpy()
    xlabel, fx = _axis_label("ΔD", axis, x)
    ylabel, fy = _axis_label("ΔM", axis, y)
    x, y = x / fx, y / fy
    layers = points["layer"].to_numpy()
    n_layers = n_layers or (int(layers.max()) + 1 if len(layers) else 1)
    cmap = plt.get_cmap("viridis", max(n_layers, 2))
    checkpoints = sorted(points["checkpoint"].unique())
    for i, cp in enumerate(checkpoints):
        sel = points["checkpoint"].to_numpy() == cp
        ax.scatter(x[sel], y[sel], c=[cmap(int(l)) for l in layers[sel]], marker=MARKERS[i % len(MARKERS)],
                   s=28, edgecolors="black", linewidths=0.3, alpha=0.85, zorder=3)
    runs = points["run_dir"].to_numpy() if "run_dir" in points else np.zeros(len(points))
    fits = 0
    for run in dict.fromkeys(runs):  # one least-squares line per run (seed): the unit of the statistics
        sel = runs == run
        _, b, a = pearson_slope(x[sel], y[sel])
        if math.isfinite(b):
            xs = np.linspace(x[sel].min(), x[sel].max(), 20)
            ax.plot(xs, a + b * xs, color="crimson", lw=0.9, alpha=0.7, zorder=2)
            fits += 1
    nan = math.nan
    s = dict(stats or {})
    if not s:
        r, slope, _ = pearson_slope(x * fx, y * fy)
        s = {"pearson": r, "slope": slope}
    r_iv = _fmt_iv(s.get("pearson", nan), s.get("pearson_low", nan), s.get("pearson_high", nan), "+.2f")
    slope_iv = _fmt_iv(s.get("slope", nan), s.get("slope_low", nan), s.get("slope_high", nan), ".3g")
    lines = [f"r = {r_iv} · slope = {slope_iv}"]
    n = s.get("n_seeds")
    method = str(points["method"].iloc[0]) if len(points) else ""
    panel = str(points["panel"].iloc[0]) if len(points) and "panel" in points else method
    paper = s.get("paper_pearson", nan)
    last = []
    if n is not None:
        last.append(f"{int(n)} seed{'s' if n != 1 else ''}" + (": descriptive" if n == 1 else ", mean [95% CI]"))
    if paper is not None and math.isfinite(paper):
        last.append(f"paper r = {paper:+.2f}")
        lines.append(_claim_line(s))
    if last:
        lines.insert(1, " · ".join(last))
    name = title if title is not None else panel_title(points, panel)
    # the statistics go over the panel (as its title's second and third lines), never over the points
    ax.set_title(name + "\n" + "\n".join(lines), fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    plain_ticks(ax)
    ax.grid(alpha=0.3, lw=0.5)
    if legend:
        steps = points.groupby("checkpoint")["step"].agg(lambda s: sorted(set(s)))
        handles = [Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="0.4",
                          label=f"step {'/'.join(map(str, steps[cp]))}") for i, cp in enumerate(checkpoints[:8])]
        if fits:
            handles.append(Line2D([], [], color="crimson", lw=0.9,
                                  label="least-squares fit" + (f", one per seed ({fits})" if fits > 1 else "")))
        ax.legend(handles=handles, fontsize=6.5, loc="best", framealpha=0.8)
    return ax


def dora_figure(points: pd.DataFrame, stats: Optional[pd.DataFrame] = None, *, axis: str = "out",
                panels: Optional[Sequence[str]] = None, suptitle: Optional[str] = None) -> Any:
    """The whole figure: one panel per method (FT, LoRA, DoRA, AdaLoRA order; split by lr where a method
    ran at several, see :func:`analysis.decomposition.panels`) and a layer colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    if "panel" not in points:
        points = points.assign(panel=points["method"])
    names = list(panels) if panels is not None else ordered_panels(points)
    n = len(names)
    fig, axes = plt.subplots(1, n, figsize=(3.9 * n + 0.8, 3.6), squeeze=False, constrained_layout=True)
    n_layers = int(points["layer"].max()) + 1 if len(points) else 1
    for ax, name in zip(axes[0], names):
        s = None
        if stats is not None and not stats.empty:
            hit = stats[(stats["panel"] == name) & (stats["axis"] == axis)]
            s = hit.iloc[0].to_dict() if len(hit) else None
        plot_panel(points[points["panel"] == name], axis=axis, stats=s, ax=ax, n_layers=n_layers)
    cmap = plt.get_cmap("viridis", max(n_layers, 2))
    norm = BoundaryNorm(np.arange(-0.5, n_layers + 0.5), cmap.N)
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[0].tolist(), ticks=range(n_layers), shrink=0.9)
    cb.set_ticklabels([str(i + 1) for i in range(n_layers)])
    cb.set_label("layer (1 = nearest the input)")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
