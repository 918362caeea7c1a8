"""Intervals over seeds against scipy's t-interval and bootstrap on known data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import stats

SCORES = [0.8123, 0.8391, 0.7950, 0.8602, 0.8288]


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
@pytest.mark.parametrize("values", [SCORES, SCORES[:2], SCORES[:3], [1.0, 2.0, 4.0, 8.0]])
def test_t_interval_equals_scipy(values: list[float], confidence: float) -> None:
    a = np.asarray(values)
    lo, hi = st.t.interval(confidence, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    iv = stats.t_interval(values, confidence=confidence)
    assert iv.n == len(a) and iv.method == "t"
    assert iv.mean == pytest.approx(a.mean(), abs=1e-15)
    assert iv.low == pytest.approx(lo, abs=1e-12)
    assert iv.high == pytest.approx(hi, abs=1e-12)
    assert iv.std == pytest.approx(a.std(ddof=1), abs=1e-15)
    assert iv.half_width == pytest.approx((hi - lo) / 2, abs=1e-12)


def test_t_interval_by_hand() -> None:
    # n = 3, mean 2, s = 1: t_{0.975, 2} = 4.302652729749464
    iv = stats.t_interval([1.0, 2.0, 3.0])
    assert iv.low == pytest.approx(2 - 4.302652729749464 / math.sqrt(3), abs=1e-12)
    assert iv.high == pytest.approx(2 + 4.302652729749464 / math.sqrt(3), abs=1e-12)


def test_one_seed_has_no_interval() -> None:
    iv = stats.t_interval([0.5])
    assert iv.mean == 0.5 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)
    assert "n=1" in iv.method and "no interval" in iv.method
    assert math.isnan(stats.bootstrap_interval([0.5]).low)
    empty = stats.t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_missing_values_are_dropped() -> None:
    iv = stats.t_interval([1.0, None, float("nan"), 3.0])  # type: ignore[list-item]
    assert iv.n == 2 and iv.mean == 2.0


@pytest.mark.parametrize("values", [SCORES, [3.1, 2.7, 3.3, 2.9, 3.0, 3.6, 2.5, 3.2]])
def test_bootstrap_matches_a_direct_percentile_bootstrap(values: list[float]) -> None:
    """Against resampling written out: seeds drawn with replacement, quantiles of the resampled means."""
    a = np.asarray(values)
    means = a[np.random.default_rng(1).integers(0, len(a), size=(40_000, len(a)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    iv = stats.bootstrap_interval(values, n_resamples=40_000, seed=0)
    width = high - low
    assert iv.method == "bootstrap" and iv.n == len(a)
    assert iv.low == pytest.approx(low, abs=0.03 * width)
    assert iv.high == pytest.approx(high, abs=0.03 * width)
    assert iv.low < iv.mean < iv.high


def test_bootstrap_is_reproducible_and_close_to_normal_theory() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(10.0, 2.0, size=400)
    iv = stats.bootstrap_interval(x, n_resamples=20_000, seed=3)
    assert iv == stats.bootstrap_interval(x, n_resamples=20_000, seed=3)
    se = x.std(ddof=1) / math.sqrt(len(x))
    # percentile bootstrap of the mean → mean ± z·se for a large sample
    assert iv.low == pytest.approx(x.mean() - 1.959964 * se, abs=0.1 * se)
    assert iv.high == pytest.approx(x.mean() + 1.959964 * se, abs=0.1 * se)


def test_interval_kinds_and_bad_kind() -> None:
    assert stats.interval(SCORES, kind="t") == stats.t_interval(SCORES)
    none = stats.interval(SCORES, kind="none")
    assert math.isnan(none.low) and none.std == pytest.approx(np.std(SCORES, ddof=1))
    with pytest.raises(ValueError, match="unknown interval"):
        stats.interval(SCORES, kind="wald")  # type: ignore[arg-type]
    assert "Student-t" in stats.describe("t") and "95%" in stats.describe("t")
    assert "bootstrap" in stats.describe("bootstrap", n_resamples=1000) and "1000" in stats.describe("bootstrap", n_resamples=1000)


def test_aggregate_groups() -> None:
    df = pd.DataFrame({"m": ["a", "a", "a", "b"], "v": [1.0, 2.0, 3.0, 5.0]})
    out = stats.aggregate(df, ["m"], ["v"]).set_index("m")
    assert out.loc["a", "v"] == 2.0 and out.loc["a", "v_n"] == 3
    lo, hi = st.t.interval(0.95, 2, loc=2.0, scale=st.sem([1.0, 2.0, 3.0]))
    assert out.loc["a", "v_low"] == pytest.approx(lo) and out.loc["a", "v_high"] == pytest.approx(hi)
    assert out.loc["b", "v_n"] == 1 and math.isnan(out.loc["b", "v_low"])


def test_zero_width_interval_is_inconclusive_not_a_verdict() -> None:
    # RTE accuracy, 277 examples: DoRA one example below LoRA in each of 3 seeds -> s = 0, a point "interval"
    d = stats.difference([0.5957, 0.6498, 0.5451], [0.5993, 0.6534, 0.5487], paired=True)
    assert d.low == pytest.approx(d.high) and d.mean < 0
    assert stats.verdict(d, +1.0) == "inconclusive" and stats.verdict(d, -1.0) == "inconclusive"
    # any spread at all gives the interval its say again
    d2 = stats.difference([0.5957, 0.6498, 0.5451], [0.5993, 0.6538, 0.5487], paired=True)
    assert d2.high < 0 and stats.verdict(d2, +1.0) == "disagrees"
