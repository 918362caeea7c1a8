"""analysis.plots.adalora: the Figure objects a reader sees (titles, layers, legends, residual, seed lines)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import ranks as R
from analysis.figures_adalora import condition_title
from analysis.plots import adalora as P
from tests.analysis.plots.checks import assert_publication
from tests.analysis.test_ranks import FINAL_A, FINAL_B, make_run


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    root = tmp_path_factory.mktemp("sweep")
    make_run(root / "s0", seed=0, final=FINAL_A)
    make_run(root / "s1", seed=1, final=FINAL_B)
    return R.load_allocations([root]), R.load_headers([root])


def per_run(long: pd.DataFrame) -> pd.DataFrame:
    return long.groupby(["run_dir", "seed", "step", "type"], observed=True)["rank"].mean().reset_index()


def test_heatmap_figure_is_human_titled_one_based_and_has_no_table(two_seeds: tuple[pd.DataFrame, dict]) -> None:
    long, _ = two_seeds
    final = R.final_ranks(long)
    mean, std, n = R.heatmap_table(final)
    fig = P.figure3(mean, std, n, title=condition_title("AdaLoRA final ranks", final), vmax=6)
    assert_publication(fig)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 1 and [t.get_text() for t in heat[0].get_xticklabels()] == ["1", "2", "3"]
    assert not any(ax.tables for ax in fig.axes)  # the summary goes beside the figure as CSV / LaTeX
    assert fig._suptitle is None and heat[0].get_title() == \
        "AdaLoRA final ranks, b(T)/n = 4 (initial 6)\ntiny · RTE · 20 steps · 2 seeds, mean ± std per cell"
    plt.close(fig)


def test_small_multiples_share_one_colour_bar(two_seeds: tuple[pd.DataFrame, dict]) -> None:
    long, _ = two_seeds
    snap = R.at_steps(long, [4, 20])
    tables = [(f"step {s}", *R.heatmap_table(snap[snap["at"] == s])) for s in (4, 20)]
    axes = P.rank_heatmap_grid(tables, vmax=6)
    fig = axes[0].figure
    fig.suptitle(condition_title("AdaLoRA ranks at chosen steps", long))
    assert_publication(fig)
    assert sum(hasattr(ax, "_colorbar") for ax in fig.axes) == 1
    assert all(ax.get_xticklabels()[0].get_text() == "1" for ax in axes)
    plt.close(fig)


def test_time_figure_seed_lines_formula_visible_and_residual(two_seeds: tuple[pd.DataFrame, dict]) -> None:
    long, headers = two_seeds
    curves = R.rank_over_time(long)
    measured, formula = R.budget_curve(long, headers)
    fig = P.time_figure(curves, measured, formula, per_run=per_run(long), target=4, init=6,
                        suptitle=condition_title("AdaLoRA allocation over time", long))
    assert_publication(fig)
    rank_ax, budget_ax, resid_ax = fig.axes
    # 2 seeds: one line per seed and type, no spread band
    seed_lines = [ln for ln in rank_ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(seed_lines) == 2 * curves["type"].nunique() and not rank_ax.collections
    assert {"seed 0", "seed 1"} <= {t.get_text() for t in rank_ax.get_legend().get_texts()}
    # the formula is drawn over the measured line, not hidden by it
    (f_line,) = [ln for ln in budget_ax.get_lines() if ln.get_label().startswith("b(t), formula")]
    (m_line,) = [ln for ln in budget_ax.get_lines() if ln.get_label().startswith("measured")]
    assert f_line.get_zorder() > m_line.get_zorder() and m_line.get_markersize() < 3
    assert len(f_line.get_xdata()) == 21  # every step 0..T
    # residual = measured − formula at each recorded step
    assert resid_ax.get_ylabel() == "residual (rank)"
    (r_line,) = [ln for ln in resid_ax.get_lines() if ln.get_label() == "measured − formula"]
    np.testing.assert_allclose(r_line.get_ydata(), measured["kept_mean"] - measured["formula"])
    plt.close(fig)


def test_rank_over_time_band_from_three_runs() -> None:
    steps = [0, 5, 10]
    curves = pd.DataFrame({"step": steps, "type": "Wq", "mean": [6.0, 5.0, 4.0], "std": [0.0, 0.5, 0.4], "n": 3})
    runs = pd.DataFrame({"run_dir": np.repeat(["a", "b", "c"], 3), "seed": np.repeat([0, 1, 2], 3),
                         "step": steps * 3, "type": "Wq", "rank": [6, 5, 4, 6, 5.5, 4.2, 6, 4.5, 3.8]})
    ax = P.rank_over_time(curves, per_run=runs)
    assert len(ax.collections) == 1 and len(ax.get_lines()) == 1  # the mean and its ± std band
    assert "± std over 3 runs" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)


def allocations(n: int) -> pd.DataFrame:
    """An allocation frame as analysis.ranks.load_allocations gives it, ``n`` runs of one Wq matrix whose rank
    and kept budget differ by run (steps 0, 5, 10; PEFT's b(t) 60, 50, 40)."""
    rows = []
    for i in range(n):
        records = ((0, 6.0, 60, 60), (5, 5.0 - 0.5 * i, 52 - 2 * i, 50), (10, 4.0 + 0.5 * i, 40 + i, 40))
        for step, rank, kept, b in records:
            rows.append({"run_dir": f"run{i}", "seed": i, "step": step, "type": "Wq", "rank": rank, "kept": kept,
                         "budget": b, "formula": b})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_time_figure_seed_lines_below_three_runs_bands_from_three(n: int) -> None:
    """Below 3 runs every panel (rank over time, budget, residual) draws one line per run (budget lines from
    analysis.ranks.budget_per_run) and no band; from 3 the mean with its band."""
    from matplotlib.collections import PolyCollection

    long = allocations(n)
    curves = R.rank_over_time(long)
    measured, formula = R.budget_curve(long)
    runs = R.budget_per_run(long)
    assert len(runs) == 3 * n and runs["kept"].tolist() == long["kept"].tolist()
    fig = P.time_figure(curves, measured, formula, per_run=per_run(long), budget_runs=runs, target=4, init=6)
    assert_publication(fig)
    rank_ax, budget_ax, resid_ax = fig.axes
    bands = [ax for ax in fig.axes if any(isinstance(c, PolyCollection) for c in ax.collections)]
    drawn = [ln for ln in rank_ax.get_lines() if len(ln.get_xdata()) > 2]
    measured_lines = [ln for ln in budget_ax.get_lines() if ln.get_label().startswith("measured")]
    resid_lines = [ln for ln in resid_ax.get_lines() if ln.get_label().startswith("measured − formula")]
    if n < 3:
        assert bands == []
        assert len(drawn) == len(measured_lines) == len(resid_lines) == n
        for i, (m_line, r_line) in enumerate(zip(measured_lines, resid_lines)):
            mine = runs[runs["run_dir"] == f"run{i}"]
            np.testing.assert_allclose(m_line.get_ydata(), mine["kept"])
            np.testing.assert_allclose(r_line.get_ydata(), mine["kept"] - mine["formula"])
            if n == 2:
                assert m_line.get_label() == f"measured, Σ non-zero λ, seed {i}"
    else:
        assert bands == [rank_ax, budget_ax, resid_ax]
        assert len(drawn) == len(measured_lines) == len(resid_lines) == 1
        np.testing.assert_allclose(measured_lines[0].get_ydata(), measured["kept_mean"])
    plt.close(fig)
