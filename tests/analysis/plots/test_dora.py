"""analysis.plots.dora: DoRA's Figure 2 as a reader sees it (scale in the labels, 1-based layers, legends)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.figures_dora import figure_title
from analysis.plots.dora import dora_figure, figure_data
from tests.analysis.plots.checks import assert_publication


def points(n_seeds: int = 2) -> pd.DataFrame:
    """Two methods × seeds × 3 layers × 2 checkpoints, ΔD ~ 1e-4 and ΔM ~ 1e-3 (as MiniLM's FT)."""
    rng = np.random.default_rng(0)
    rows = []
    for method in ("full", "lora"):
        for seed in range(n_seeds):
            for cp, step in ((1, 100), (2, 200)):
                for layer in range(3):
                    d = 1e-4 * (1 + layer + cp) * (1 + 0.05 * rng.standard_normal())
                    rows.append({"panel": method, "method": method, "seed": seed, "run_dir": f"{method}_s{seed}",
                                 "layer": layer, "checkpoint": cp, "step": step, "total_steps": 200,
                                 "task": "sst2", "model": "minilm", "dD_out": d, "dM_out": 10 * d + 1e-4 * layer})
    return pd.DataFrame(rows)


def test_figure_is_publication_ready() -> None:
    pts = points()
    fig = dora_figure(pts, axis="out", suptitle=figure_title(pts, "Wq", "out"))
    assert_publication(fig)
    setup = fig._suptitle.get_text().splitlines()[1]
    assert setup == "MiniLM-L6 · SST-2 · 200 steps · 2 seeds · 3 layers × 2 checkpoints"
    panels = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["FT", "LoRA"]
    assert panels[1].get_title().splitlines()[1].startswith("r = ")  # statistics over the panel, not on the points
    assert not panels[1].texts
    assert panels[0].get_xlabel() == "ΔD (×10⁻⁴), norms per output feature"
    assert panels[0].get_ylabel() == "ΔM (×10⁻³), norms per output feature"
    (cbar,) = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert [t.get_text() for t in cbar.get_yticklabels()] == ["1", "2", "3"]
    legend = [t.get_text() for t in panels[1].get_legend().get_texts()]
    assert legend == ["step 100", "step 200", "least-squares fit, one per seed (2)"]
    plt.close(fig)


def test_the_runs_method_label_titles_the_panel() -> None:
    pts = points(1).assign(method_label=lambda d: d["method"].map({"full": "Full fine-tuning", "lora": "LoRA"}))
    fig = dora_figure(pts, axis="out")
    panels = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["Full fine-tuning", "LoRA"]
    plt.close(fig)


def test_figure_data_is_what_is_drawn_with_one_based_layers() -> None:
    pts = points()
    data = figure_data(pts, "out")
    assert sorted(data["layer"].unique()) == [1, 2, 3] and len(data) == len(pts)
    np.testing.assert_allclose(data["dM"], pts["dM_out"])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_fit_line_per_seed_and_no_band(n: int) -> None:
    """Figure 2 draws no interval band at any seed count: each seed's points and its own fit line."""
    from matplotlib.collections import PolyCollection

    pts = points(n)
    fig = dora_figure(pts, axis="out", suptitle=figure_title(pts, "Wq", "out"))
    assert_publication(fig)
    for ax in (ax for ax in fig.axes if not hasattr(ax, "_colorbar")):
        assert not any(isinstance(c, PolyCollection) for c in ax.collections)
        assert len(ax.get_lines()) == n  # one least-squares line per seed
    plt.close(fig)


def test_a_panel_states_both_answers_to_the_paper_claim() -> None:
    from analysis.plots.dora import _claim_line

    line = _claim_line({"verdict": "disagrees", "p": 0.0037, "p_holm": 0.0075, "value": "outside", "p_value": 0.0016})
    assert line == "sign disagrees (p 0.004, Holm 0.007) · value outside the CI (p 0.002)"
    assert "(p –, Holm –)" in _claim_line({"verdict": "inconclusive", "p": float("nan"), "value": "inside"})
