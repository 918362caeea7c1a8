"""The one-page overview of a sweep (``<sweep>/summary.png``): per task the metric per configuration (interval
over seeds from 3 seeds, each seed below), parameters trained and train time, from the same numbers as the
tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from analysis import compare, inputs
from analysis.overview import OVERVIEW_FILE, overview_figure, write_overview
from tests.analysis.test_compare import make_sweep, write_run

matplotlib.use("Agg")


def test_write_overview_beside_the_summary(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    path = write_overview(sweep)
    assert path == sweep / OVERVIEW_FILE == sweep / "summary.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_draws_the_tables_numbers(tmp_path: Path) -> None:
    """Per task a row of three panels; the metric panel's points and error bars are compare()'s means and
    intervals, the other panels its parameters and train seconds."""
    import matplotlib.pyplot as plt

    runs, _, _ = inputs.load_inputs([make_sweep(tmp_path)])
    fig, data = overview_figure(runs)
    long = compare.compare(runs)
    assert len(fig.axes) == 3 * 2  # two tasks
    configs = data[data["seed"].isna()]
    merged = configs.merge(long, on=["task", "method", "budget"], suffixes=("", "_table"))
    assert len(merged) == len(long) == 8
    for c in ("mean", "low", "high", "trainable_params", "train_seconds"):
        assert merged[c].to_numpy() == pytest.approx(merged[f"{c}_table"].to_numpy())
    metric_axes = [ax for ax in fig.axes if "Acc" in ax.get_xlabel()]
    assert len(metric_axes) == 2
    for ax in metric_axes:
        assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 4  # 3 seeds: every row an interval
        bars = ax.containers[0].lines[2][0].get_segments()
        assert all(0 <= seg[0][0] <= seg[1][0] <= 1 for seg in bars)  # accuracy stays in [0, 1]
    assert any("parameters trained" in ax.get_xlabel() for ax in fig.axes)
    assert any("train time" in ax.get_xlabel() for ax in fig.axes)
    plt.close(fig)


def test_fewer_than_three_seeds_are_drawn_seed_by_seed(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    for seed in (0, 1):
        write_run(tmp_path / "sweep", f"{seed}_lora", seed=seed, value=0.8 + 0.1 * seed)
    write_run(tmp_path / "sweep", "2_full", method="full", budget=None, value=0.9)
    runs, _, _ = inputs.load_inputs([tmp_path / "sweep"])
    fig, data = overview_figure(runs)
    (ax,) = [ax for ax in fig.axes if "Acc" in ax.get_xlabel()]
    assert not any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    seeds = data[data["seed"].notna()]
    assert sorted(seeds["value"]) == pytest.approx([0.8, 0.9, 0.9])
    assert "each seed" in fig.texts[0].get_text() or "each seed" in fig._suptitle.get_text()
    plt.close(fig)


def test_no_finished_run_no_figure(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep", "a", status="failed")
    assert write_overview(tmp_path / "sweep") is None
    assert not (tmp_path / "sweep" / OVERVIEW_FILE).exists()


def test_data_is_a_frame(tmp_path: Path) -> None:
    runs, _, _ = inputs.load_inputs([make_sweep(tmp_path)])
    _, data = overview_figure(runs)
    assert isinstance(data, pd.DataFrame) and {"task", "method", "budget", "seed", "value"} <= set(data.columns)
