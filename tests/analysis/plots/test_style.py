"""analysis.plots.style: labels with their scale, no offset text, human setup lines, method styles."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.plots import style
from tests.analysis.plots.checks import assert_no_offset_text, assert_no_slug
from harness.record import LEGACY_METHODS


@pytest.mark.parametrize(("values", "label", "factor"), [
    ([1e-4, 3.2e-3], "ΔM (×10⁻³)", 1e-3),
    ([0.2, 0.45], "ΔM", 1.0),
    ([1200.0, 5000.0], "ΔM (×10³)", 1e3),
    ([np.nan], "ΔM", 1.0),
])
def test_scaled_label(values: list[float], label: str, factor: float) -> None:
    assert style.scaled_label("ΔM", values) == (label, pytest.approx(factor))


def test_scaled_label_with_unit() -> None:
    assert style.scaled_label("time", [2.0e4], unit="s")[0] == "time (×10⁴ s)"


def test_plain_ticks_removes_the_offset_text_the_default_draws() -> None:
    fig, ax = plt.subplots()
    ax.plot([1.0, 1.0 + 1e-5], [5e-7, 6e-7])
    with pytest.raises(AssertionError, match="offset text"):  # the check fails on matplotlib's default
        assert_no_offset_text(fig)
    style.plain_ticks(ax)
    assert_no_offset_text(fig)
    plt.close(fig)


def test_setup_line_and_slug_check() -> None:
    line = style.setup_line(model="minilm", task="rte", steps=1200, seeds=3)
    assert line == "MiniLM-L6 · RTE · 1200 steps · 3 seeds"
    assert style.setup_line(model=None, task="sst2", steps=float("nan"), seeds=1) == "SST-2 · 1 seed"
    fig = plt.figure()
    fig.suptitle("AdaLoRA · rte_minilm_b4_T1200")
    with pytest.raises(AssertionError, match="internal name"):
        assert_no_slug(fig)
    plt.close(fig)


def test_layer_ticklabels_are_one_based() -> None:
    assert style.layer_ticklabels([0, 1, 11]) == ["1", "2", "12"]


def test_method_styles_prefer_the_runs_label_and_colour() -> None:
    frame = pd.DataFrame({"method": ["lora", "dora", "vera"],
                          "method_label": ["LoRA (PEFT)", None, None], "method_color": ["#000001", None, None]})
    got = style.method_styles(frame)
    assert got["lora"] == ("LoRA (PEFT)", "#000001")
    legacy = LEGACY_METHODS["dora"]  # a record from before the methods recorded their display
    assert got["dora"] == (legacy["method_label"], legacy["method_color"])
    assert got["vera"][0] == "vera" and len(got["vera"][1]) == 4  # an RGBA from the palette
    assert style.method_styles(frame.drop(columns=["method_label", "method_color"]))["lora"] == \
        ("LoRA", LEGACY_METHODS["lora"]["method_color"])


def test_a_method_never_seen_gets_a_label_a_colour_and_a_marker() -> None:
    """Display comes from what the run recorded; a method no record or table knows still gets all of it."""
    frame = pd.DataFrame({"method": ["newmethod", "recorded"], "method_label": [None, "Rec"],
                          "method_color": [None, "#123456"], "method_marker": [None, "P"]})
    got = style.method_styles(frame)
    assert got["newmethod"][0] == "newmethod" and len(got["newmethod"][1]) == 4
    assert got["recorded"] == ("Rec", "#123456")
    assert style.method_marker("newmethod", frame) == "o" and style.method_marker("recorded", frame) == "P"


def test_importing_the_plot_modules_leaves_the_backend_alone() -> None:
    code = ("import matplotlib; matplotlib.use('svg'); "
            "import analysis.plots.adalora, analysis.plots.dora, analysis.plots.compare, analysis.figures_dora, "
            "analysis.figures_adalora; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
