"""Conventions shared by every figure: human titles, method labels and colours, axis labels that carry
their scale (no floating offset text), 1-based layer labels. Nothing here writes files or picks a backend.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import ScalarFormatter

from analysis.labels import method_display, task_label

#: Short names of the harness's model configs (``conf/model/``) as a reader knows them.
MODEL_LABELS: dict[str, str] = {"minilm": "MiniLM-L6", "tiny_bert": "tiny BERT", "tiny_deberta": "tiny DeBERTa",
                                "tiny_llama": "tiny Llama", "tiny_roberta": "tiny RoBERTa"}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) != ""


def model_label(model: Any) -> str:
    """``MiniLM-L6`` for ``minilm``; other names unchanged."""
    return MODEL_LABELS.get(str(model), str(model))


def setup_line(*, model: Any = None, task: Any = None, steps: Any = None, seeds: Any = None) -> str:
    """``MiniLM-L6 · RTE · 1200 steps · 3 seeds``: the parts that are known, in that order."""
    parts = []
    if _known(model):
        parts.append(model_label(model))
    if _known(task):
        parts.append(task_label(task))
    if _known(steps):
        parts.append(f"{int(steps)} steps")
    if _known(seeds):
        parts.append(f"{int(seeds)} seed{'s' if int(seeds) != 1 else ''}")
    return " · ".join(parts)


def first(frame: pd.DataFrame, column: str) -> Any:
    """The single value of ``column`` in ``frame``; None when absent or not one value (then a title omits it)."""
    if column not in frame:
        return None
    vals = frame[column].dropna().unique()
    return vals[0] if len(vals) == 1 else None


def method_styles(frame: pd.DataFrame, method_col: str = "method",
                  palette: str = "tab10") -> dict[str, tuple[str, Any]]:
    """method → (label, colour): what the runs recorded (the data's ``method_label`` / ``method_color``
    columns, :func:`analysis.labels.method_display`), and the ``palette``'s colours in name order for methods
    without a colour (a method no record describes gets its name and a colour)."""
    methods = list(dict.fromkeys(frame[method_col].astype(str))) if method_col in frame else []
    rows = frame.rename(columns={method_col: "method"}) if method_col in frame else None
    shown = {m: method_display(m, rows) for m in methods}
    unknown = sorted(m for m in methods if not shown[m]["method_color"])
    return {m: (str(shown[m]["method_label"]), shown[m]["method_color"] or _palette_color(palette, unknown.index(m)))
            for m in methods}


def method_marker(method: Any, frame: Optional[pd.DataFrame] = None) -> str:
    """The method's marker in plots, as its runs recorded it (:func:`analysis.labels.method_display`)."""
    return str(method_display(method, frame)["method_marker"])


def _palette_color(palette: str, i: int) -> Any:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap(palette)
    return cmap(i % getattr(cmap, "N", 10))


def scale_exponent(values: Iterable[float]) -> int:
    """The power of ten to factor out of an axis (0 when the largest magnitude is in [0.01, 1000))."""
    v = np.abs(np.asarray(list(values), dtype=float))
    v = v[np.isfinite(v)]
    top = float(v.max()) if v.size else 0.0
    exp = int(math.floor(math.log10(top))) if top > 0 else 0
    return exp if exp <= -2 or exp >= 3 else 0


def scaled_label(quantity: str, values: Iterable[float], unit: str = "") -> tuple[str, float]:
    """(``ΔM (×10⁻³)``, 1e-3): an axis label with its scale written in it, and the factor to divide the data by
    so that the ticks need no offset text. ``unit`` goes after the scale (``time (×10³ s)``)."""
    exp = scale_exponent(values)
    inside = " ".join(p for p in ((f"×10{str(exp).translate(_SUPERSCRIPT)}" if exp else ""), unit) if p)
    return (f"{quantity} ({inside})" if inside else quantity), 10.0 ** exp


def plain_ticks(ax: Axes) -> Axes:
    """Linear axes show plain numbers: no offset text and no scientific multiplier (the scale is in the label)."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "linear":
            fmt = ScalarFormatter(useOffset=False)
            fmt.set_scientific(False)
            axis.set_major_formatter(fmt)
    return ax


def layer_ticklabels(layers: Iterable[Any]) -> list[str]:
    """0-based layer indices (as in module names) → the 1-based labels every figure shows."""
    return [str(int(layer) + 1) for layer in layers]


def legend_below(fig: Any, handles: list[Any], *, ncol: Optional[int] = None) -> Any:
    """One legend for the whole figure, under the panels (the figure must use the constrained layout)."""
    return fig.legend(handles=handles, loc="outside lower center", ncol=ncol or min(len(handles), 6), fontsize=8,
                      frameon=False)
