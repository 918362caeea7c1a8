"""The allocation claims over conditions: per-condition and over-tasks p's equal scipy's t-tests, Holm equals a
hand-made step-down within each declared family, and an over-tasks row needs two tasks of one setting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.allocation_family import family_table, render_markdown


def condition(task: str, target_r: int, ffn: np.ndarray, top: np.ndarray) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(label, long rows, shares) of one condition whose per-seed differences are ``ffn`` and ``top``."""
    n = len(ffn)
    long = pd.DataFrame({"task": task, "model": "minilm", "target_r": target_r, "init_r": 12,
                         "total_steps": 1200, "run_dir": [f"{task}{target_r}/s{i}" for i in range(n)]})
    shares = pd.DataFrame({"ffn_mean": 5.0 + ffn, "attn_mean": 5.0, "top_mean": 4.0 + top, "bottom_mean": 4.0})
    return f"{task}_minilm_b{target_r}_T1200", long, shares


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p's, written out independently of analysis.stats."""
    order = np.argsort(p)
    adj = np.empty_like(p)
    run = 0.0
    for i, k in enumerate(order):
        run = max(run, min(1.0, (len(p) - i) * p[k]))
        adj[k] = run
    return adj


def test_family_matches_scipy_and_holm() -> None:
    rng = np.random.default_rng(3)
    tasks = ["rte", "mrpc", "stsb"]
    conds = [condition(t, 8, rng.normal(m, 1.0, 5), rng.normal(-0.2, 1.0, 5)) for t, m in zip(tasks, (8, 0.1, 1))]
    conds.append(condition("rte", 4, rng.normal(1, 1.0, 4), rng.normal(0, 1.0, 4)))  # another setting, one task
    table = family_table(conds)
    per = table[table["family"] == "per condition"]
    assert len(per) == 8
    expected = []
    for label, _, sh in conds:
        for hi, lo in (("ffn_mean", "attn_mean"), ("top_mean", "bottom_mean")):
            expected.append(stats.ttest_1samp(sh[hi] - sh[lo], 0.0).pvalue)
    assert per["p"].to_numpy() == pytest.approx(np.array(expected), rel=1e-9)
    assert per["p_holm"].to_numpy() == pytest.approx(holm(np.array(expected)), rel=1e-9)
    over = table[table["family"] == "over tasks"]
    assert list(over["claim"]) == ["ffn", "top"] and set(over["n"]) == {3}  # the b4 setting has one task: no row
    means = [(sh["ffn_mean"] - sh["attn_mean"]).mean() for _, _, sh in conds[:3]]
    assert over["p"].iloc[0] == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue, rel=1e-9)
    assert over["estimate"].iloc[0] == pytest.approx(np.mean(means))
    assert over["p_holm"].to_numpy() == pytest.approx(holm(over["p"].to_numpy()), rel=1e-9)
    strong = per[(per["condition"] == "rte_minilm_b8_T1200") & (per["claim"] == "ffn")].iloc[0]
    assert strong["verdict"] == "agrees" and strong["positive"] == 5
    text = render_markdown(table)
    assert "8 per-condition verdicts" in text and "2 over-tasks verdicts" in text


def test_one_seed_is_descriptive() -> None:
    table = family_table([condition("rte", 8, np.array([1.0]), np.array([-1.0])),
                          condition("mrpc", 8, np.array([2.0]), np.array([1.0]))])
    per = table[table["family"] == "per condition"]
    assert set(per["verdict"]) == {"descriptive"} and per["p"].isna().all()
    assert len(table[table["family"] == "over tasks"]) == 2
