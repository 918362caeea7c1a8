"""analysis.plots.compare: seed lines below 3 seeds, one shared legend, human titles, no offset text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection

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
    # each axis names its own quantity (the method loop once overwrote the axis label with a method's)
    assert [ax.get_xlabel() for ax in fig.axes] == ["trainable parameters (log)", "train time (s)",
                                                    "peak memory (GiB)"]
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


def seed_runs(tmp_path: Path, n: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """LoRA r=8 on RTE with ``n`` seeds, eval at steps 10 and 20, loaded as the commands load them."""
    from analysis import inputs
    from tests.analysis.test_compare import write_run

    for seed in range(n):
        write_run(tmp_path, f"{seed}_lora_rte_s{seed}", task="rte", seed=seed, value=0.6 + 0.05 * seed)
    runs, _, metrics = inputs.load_inputs([tmp_path])
    return runs, metrics


def bands(ax: Axes) -> list[Any]:
    """The filled intervals (fill_between) of ``ax``."""
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_learning_curves_seed_lines_below_three_seeds(n: int, tmp_path: Path) -> None:
    """From the run folders: below 3 seeds one line per seed (its own values, from compare.curve_points) and no
    band; from 3 the mean and its interval band."""
    from analysis import compare

    runs, metrics = seed_runs(tmp_path, n)
    curves = compare.curves(runs, metrics)
    points = compare.curve_points(runs, metrics)
    assert len(points) == 2 * n and sorted(points["seed"].unique()) == list(range(n))
    fig = pc.curves_figure(curves, seeds=points)
    (ax,) = fig.axes
    assert_publication(fig)
    ys = [list(np.round(ln.get_ydata(), 6)) for ln in ax.get_lines()]
    if n < 3:
        assert not bands(ax)
        assert ys == [[round(0.5 + 0.05 * s, 6), round(0.6 + 0.05 * s, 6)] for s in range(n)]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["LoRA r=8 (n=1)" if n == 1 else "LoRA r=8, one line per seed (n=2)"]
    else:
        assert len(bands(ax)) == 1 and ys == [[0.55, 0.65]]
    data = pc.curves_data(curves, tasks=["rte"], seeds=points)
    assert data["seed"].notna().sum() == 2 * n  # the CSV holds the seed points too
    plt.close(fig)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_pareto_seed_markers_below_three_seeds(n: int, tmp_path: Path) -> None:
    """Below 3 seeds no error bar (2 seeds give t = 12.7) and each seed's value as an open marker
    (compare.seed_values); from 3 the table's interval as the error bar and no seed markers."""
    from analysis import compare

    runs, _ = seed_runs(tmp_path, n)
    long = compare.compare(runs)
    seeds = compare.seed_values(runs)
    assert seeds["value"].round(6).tolist() == [round(0.6 + 0.05 * s, 6) for s in range(n)]
    fig = pc.pareto_figure(long, task="rte", seeds=seeds)
    assert_publication(fig)
    ax = fig.axes[0]
    (bar,) = ax.containers
    marks = [c for c in ax.collections if c.get_label().startswith("one seed")]
    if n < 3:
        assert not bar.has_yerr and len(marks) == 1
        np.testing.assert_allclose(marks[0].get_offsets()[:, 1], [0.6 + 0.05 * s for s in range(n)])
        assert "one seed (configurations with n < 3)" in [t.get_text() for t in fig.legends[0].get_texts()]
    else:
        assert bar.has_yerr and not marks
    data = pc.pareto_data(long, task="rte", seeds=seeds)
    assert len(data) == 1 + (n if n < 3 else 0)
    plt.close(fig)
