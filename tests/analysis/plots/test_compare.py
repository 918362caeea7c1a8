"""analysis.plots.compare: seed lines below 3 seeds, one shared legend, human titles, no offset text."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from analysis.plots import compare as pc
from tests.analysis.plots.checks import assert_publication

KEYS = {"task": "rte", "model": "minilm", "metric": "accuracy", "variant": ""}


def two_seed_curves() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, seeds): LoRA r=8 on RTE, 2 seeds, eval at steps 10 and 20; the t-interval of 2 seeds is huge."""
    seeds = pd.DataFrame({"method": "lora", "budget": 8, "seed": [0, 0, 1, 1], "step": [10, 20, 10, 20],
                          "value": [0.55, 0.60, 0.58, 0.66], **KEYS})
    curves = pd.DataFrame({"method": "lora", "budget": 8, "step": [10, 20], "mean": [0.565, 0.63],
                           "low": [0.37, -0.06], "high": [0.76, 1.12], "n": 2, **KEYS})
    return curves, seeds


def test_two_seeds_are_drawn_as_seed_lines_not_a_band() -> None:
    curves, seeds = two_seed_curves()
    fig = pc.curves_figure(curves, model="minilm", seeds=seeds)
    assert_publication(fig)
    (ax,) = fig.axes
    assert not ax.collections  # no band
    assert [list(ln.get_ydata()) for ln in ax.get_lines()] == [[0.55, 0.60], [0.58, 0.66]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["LoRA r=8, one line per seed (n=2)"]
    assert fig._suptitle.get_text() == "Learning curves · MiniLM-L6 · RTE · 2 seeds"
    plt.close(fig)


def test_two_seeds_without_seed_values_draw_the_mean_only() -> None:
    curves, _ = two_seed_curves()
    ax = pc.learning_curves(curves)
    assert not ax.collections and len(ax.get_lines()) == 1
    assert ax.get_legend().get_texts()[0].get_text() == "LoRA r=8 (n=2, no interval)"
    plt.close(ax.figure)


def test_pareto_row_has_one_shared_legend_and_the_runs_colours() -> None:
    long = pd.DataFrame({"method": ["lora", "dora"], "budget": [8, 8], "mean": [0.63, 0.64], "low": [0.6, 0.6],
                         "high": [0.66, 0.68], "n": 3, "higher_is_better": True, "trainable_params": [3e5, 3.2e5],
                         "train_seconds": [1200.0, 1500.0], "peak_memory_bytes": [2**31, 2**31 + 2**28],
                         "method_label": ["LoRA", "DoRA (PEFT)"], "method_color": ["#111111", "#222222"], **KEYS})
    fig = pc.pareto_figure(long, task="rte", model="minilm")
    assert_publication(fig)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"LoRA", "DoRA (PEFT)", "Pareto frontier"}
    dora = [c for c in fig.axes[0].containers if c.get_label() == "DoRA (PEFT)"]
    assert dora and dora[0].lines[0].get_color() == "#222222"
    assert fig._suptitle.get_text() == "Score against cost · MiniLM-L6 · RTE · 3 seeds"
    plt.close(fig)


def test_data_of_the_figures_is_what_they_draw() -> None:
    curves, seeds = two_seed_curves()
    data = pc.curves_data(curves, tasks=["rte"], model="minilm", seeds=seeds)
    assert len(data) == 2 + 4 and data["seed"].notna().sum() == 4
    assert pc.curves_data(curves, tasks=["sst2"]).empty
    long = pd.DataFrame({"method": ["lora", "lora"], "task": ["rte", "sst2"], "model": "minilm"})
    assert pc.pareto_data(long, task="rte")["task"].tolist() == ["rte"]
