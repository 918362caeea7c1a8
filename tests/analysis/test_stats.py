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
    a, b = np.array([0.5957, 0.6498, 0.5451]), np.array([0.5993, 0.6534, 0.5487])
    d = stats.difference(a, b, paired=True)
    assert d.low == pytest.approx(d.high) and d.mean < 0
    assert stats.claim(a - b, +1.0).sign == "inconclusive" and stats.claim(a - b, -1.0).sign == "inconclusive"
    # any spread at all gives the interval its say again
    b2 = np.array([0.5993, 0.6538, 0.5487])
    assert stats.difference(a, b2, paired=True).high < 0 and stats.claim(a - b2, +1.0).sign == "disagrees"


# ------------------------------------------------------------------------------------------ decisions

A5 = np.array([0.8123, 0.8391, 0.7950, 0.8602, 0.8288])
B5 = np.array([0.8010, 0.8301, 0.7990, 0.8420, 0.8105])


@pytest.mark.parametrize("margin", [0.005, 0.01, 0.05])
def test_paired_decision_equals_scipy(margin: float) -> None:
    d = stats.decide(A5, B5, margin=margin, paired=True)
    ref = st.ttest_rel(A5, B5)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-12) and d.paired and d.n == 5
    assert (d.low, d.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-12)
    assert (d.low_eq, d.high_eq) == pytest.approx(tuple(ref.confidence_interval(0.90)), rel=1e-12)
    tost = max(st.ttest_rel(A5 + margin, B5, alternative="greater").pvalue,
               st.ttest_rel(A5 - margin, B5, alternative="less").pvalue)
    assert d.p_equiv == pytest.approx(tost, rel=1e-12)
    assert d.estimate == pytest.approx(float(np.mean(A5 - B5)))


def test_welch_and_one_sample_decisions_equal_scipy() -> None:
    b = B5[:4]
    d = stats.decide(A5, b, margin=0.01, paired=False)
    ref = st.ttest_ind(A5, b, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-12) and not d.paired and d.n == 4
    assert (d.low, d.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-12)
    tost = max(st.ttest_ind(A5 + 0.01, b, equal_var=False, alternative="greater").pvalue,
               st.ttest_ind(A5 - 0.01, b, equal_var=False, alternative="less").pvalue)
    assert d.p_equiv == pytest.approx(tost, rel=1e-12)
    one = stats.decide(A5, reference=0.80, margin=0.05, paired=False)
    r1 = st.ttest_1samp(A5, 0.80)
    assert one.estimate == pytest.approx(A5.mean()) and one.p == pytest.approx(r1.pvalue, rel=1e-12)
    assert (one.low, one.high) == pytest.approx(tuple(r1.confidence_interval(0.95)), rel=1e-12)
    assert one.p_equiv == pytest.approx(max(st.ttest_1samp(A5, 0.75, alternative="greater").pvalue,
                                            st.ttest_1samp(A5, 0.85, alternative="less").pvalue), rel=1e-12)


def test_four_verdicts() -> None:
    base = np.array([0.80, 0.81, 0.79, 0.805, 0.795, 0.80])
    assert stats.decide(base + 0.05, base + np.array([0, .001, -.001, .002, 0, -.002]), margin=0.01,
                        paired=True).verdict == "better"
    assert stats.decide(base, base + 0.05 + np.array([0, .001, -.001, .002, 0, -.002]), margin=0.01,
                        paired=True).verdict == "worse"
    assert stats.decide(base, base + 0.05 + np.array([0, .001, -.001, .002, 0, -.002]), margin=0.01, paired=True,
                        higher_is_better=False).verdict == "better"  # lower is better: a's smaller values win
    assert stats.decide(base, base + np.array([0, .001, -.001, .002, 0, -.002]), margin=0.01,
                        paired=True).verdict == "equivalent"
    wide = stats.decide(base, base[::-1] + np.array([0.03, -0.03, 0.02, -0.02, 0.01, -0.01]), margin=0.01, paired=True)
    assert wide.verdict == "undetermined" and wide.low_n
    assert stats.decide([0.8], [0.7], margin=0.01, paired=True).verdict == "descriptive"
    zero = stats.decide(base + 0.01, base, margin=0.001, paired=True)  # every seed the same difference
    assert zero.verdict == "undetermined" and zero.low == zero.high == pytest.approx(0.01)


def test_bad_margin_and_missing_side() -> None:
    with pytest.raises(ValueError, match="margin"):
        stats.decide(A5, B5, margin=0, paired=True)
    with pytest.raises(ValueError, match="reference"):
        stats.decide(A5, margin=0.01, paired=False)
    with pytest.raises(ValueError, match="as many"):
        stats.decide(A5, B5[:3], margin=0.01, paired=True)
    assert stats.default_margin("eval/accuracy") == 0.01 and stats.default_margin("pearson_spearman") == 0.01


def _holm_brute(p: list[float]) -> np.ndarray:
    """Holm by its definition: the adjusted p of H_i is the smallest α at which closed testing with
    Bonferroni local tests rejects H_i (every subset S ∋ i has min_{j∈S} p_j ≤ α / |S|)."""
    m = len(p)
    out = np.zeros(m)
    import itertools

    for i in range(m):
        worst = 0.0
        for k in range(1, m + 1):
            for sub in itertools.combinations(range(m), k):
                if i in sub:
                    worst = max(worst, min(1.0, k * min(p[j] for j in sub)))
        out[i] = worst
    return out


def test_holm_equals_closed_testing_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        m = int(rng.integers(1, 8))
        p = list(rng.uniform(0, 0.2, m) ** 2)
        assert stats.holm(p) == pytest.approx(_holm_brute(p), rel=1e-12, abs=1e-15)
    out = stats.holm([0.01, float("nan"), 0.04, 0.03])
    assert math.isnan(out[1]) and out[[0, 2, 3]] == pytest.approx([0.03, 0.06, 0.06])


def test_decide_family_adjusts_p_and_p_equiv_together() -> None:
    ds = [stats.decide(A5 + s, B5, margin=0.01, paired=True) for s in (0.0, 0.02, 0.05)]
    fam = stats.decide_family(ds)
    adj = stats.holm([x for d in ds for x in (d.p, d.p_equiv)])
    assert [x for d in fam for x in (d.p_adj, d.p_equiv_adj)] == pytest.approx([float(x) for x in adj[:6]])
    assert all(f.p == d.p for f, d in zip(fam, ds))


def _paired_p(d: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised p and TOST p of studies d (studies, n): the formulas of stats.decide."""
    n = d.shape[1]
    m, se = d.mean(axis=1), d.std(axis=1, ddof=1) / np.sqrt(n)
    p = 2 * st.t.sf(np.abs(m) / se, n - 1)
    pe = np.maximum(st.t.sf((m + margin) / se, n - 1), st.t.cdf((m - margin) / se, n - 1))
    return p, pe


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("noise", ["normal", "lognormal", "t3"])
def test_equivalent_at_most_5_percent_when_the_true_difference_is_the_margin(n: int, noise: str) -> None:
    """Per-seed values of both sides skewed (lognormal) or heavy-tailed (t3), as training runs of two methods
    are; their paired differences at the margin. (Only one side strongly skewed — lognormal σ=0.5, skewness 1.75 —
    makes the one-sided t-tests err ~12% at the margin: docs/comparing.md.)"""
    rng = np.random.default_rng(11)
    margin = 0.01
    draw = {"normal": rng.standard_normal, "lognormal": lambda s: rng.lognormal(0, 0.5, s),
            "t3": lambda s: rng.standard_t(3, s)}[noise]
    d = margin + 0.01 * (draw((4000, n)) - draw((4000, n)))
    _, pe = _paired_p(d, margin)
    for i in range(20):  # the vectorised formula is the function's
        assert stats.decide(d[i], np.zeros(n), margin=margin, paired=True).p_equiv == pytest.approx(pe[i], rel=1e-9)
    rate = float(np.mean(pe < 0.05))
    assert rate <= 0.05 + 0.012, rate  # 0.012: ~3 Monte Carlo standard errors of 4000 studies at 5%


@pytest.mark.parametrize("k", [6, 12])
def test_holm_keeps_familywise_error_under_the_global_null(k: int) -> None:
    rng = np.random.default_rng(5)
    studies, n = 2000, 5
    d = rng.standard_normal((studies, k, n))
    p = 2 * st.t.sf(np.abs(d.mean(-1)) / (d.std(-1, ddof=1) / np.sqrt(n)), n - 1)
    fwer = float(np.mean([(stats.holm(row) < 0.05).any() for row in p]))
    raw = float(np.mean((p < 0.05).any(axis=1)))
    assert fwer <= 0.05 + 0.015, fwer
    assert raw > 0.2  # unadjusted, the family errs far more often (the test can fail)


@pytest.mark.parametrize(("sd", "diff", "margin"), [(0.01, 0.0, 0.01), (0.01, 0.02, 0.01), (0.02, 0.004, 0.01), (0.01, 0.009, 0.01)])
def test_seeds_needed_reaches_the_power_in_simulation(sd: float, diff: float, margin: float) -> None:
    n = stats.seeds_needed(sd, diff, margin=margin)
    rng = np.random.default_rng(7)

    def decided(k: int) -> float:
        d = diff + sd * rng.standard_normal((4000, k))
        p, pe = _paired_p(d, margin)
        return float(np.mean((pe < 0.05) | (p < 0.05)))

    assert 2 <= n < stats.MAX_SEEDS
    assert decided(n) == pytest.approx(stats._power(n, sd, diff, margin, 0.05, True), abs=0.02)
    assert decided(n) >= 0.8 - 0.02
    if n > 2:
        assert decided(n - 1) < 0.8 + 0.02


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("noise", ["lognormal", "t3"])
def test_printed_interval_covers_at_the_recommended_seed_counts(n: int, noise: str) -> None:
    """Skewed (lognormal) and heavy-tailed (t3) per-seed values, paired and Welch: the 95% interval covers."""
    rng = np.random.default_rng(13)
    draw = {"lognormal": lambda s: rng.lognormal(0, 0.6, s), "t3": lambda s: rng.standard_t(3, s)}[noise]
    a, b = 0.8 + 0.01 * draw((2000, n)), 0.8 + 0.004 * rng.standard_normal((2000, n))
    true = 0.01 * (math.exp(0.18) if noise == "lognormal" else 0.0)
    for paired in (True, False):
        ci = (st.ttest_rel(a, b, axis=1) if paired else st.ttest_ind(a, b, axis=1, equal_var=False)).confidence_interval()
        for i in range(10):  # the printed interval is scipy's
            d = stats.decide(a[i], b[i], margin=0.01, paired=paired)
            assert (d.low, d.high) == pytest.approx((ci.low[i], ci.high[i]), rel=1e-9)
        cover = np.mean((ci.low <= true) & (true <= ci.high))
        assert 0.93 <= cover <= 0.97, (paired, cover)


def test_claim_sign_and_value() -> None:
    r = [0.21, 0.25, 0.19, 0.27, 0.23, 0.22]
    c = stats.claim(r, -1.0, paper=-0.31, fisher=True)
    z = np.arctanh(r)
    assert c.p == pytest.approx(st.ttest_1samp(z, 0).pvalue, rel=1e-12)
    assert c.p_value == pytest.approx(st.ttest_1samp(z, np.arctanh(-0.31)).pvalue, rel=1e-12)
    assert c.sign == "disagrees" and c.value == "outside"
    near = stats.claim([0.80, 0.86, 0.83, 0.90, 0.78], +1.0, paper=0.83, fisher=True)
    assert near.sign == "agrees" and near.value == "inside"
    fam = stats.claim_family([c, near, stats.claim([0.1, -0.1, 0.05], 1.0)], [-1.0, 1.0, 1.0])
    assert [f.p_adj for f in fam] == pytest.approx(list(stats.holm([c.p, near.p, fam[2].p])))
    assert fam[2].sign == "inconclusive" and fam[2].value == "no paper value"
    assert stats.claim([0.3], 1.0, paper=0.2).sign == "descriptive"


def test_identical_differences_up_to_rounding_give_no_p_value() -> None:
    """RTE: DoRA one example below LoRA in every seed; the differences agree to the last bits, s ≈ 1e-18: no test
    (NaN p), undetermined / inconclusive, never p < 0.001."""
    from analysis import stats as S

    a = np.array([0.5933, 0.6011, 0.5855])
    b = a + 0.0036101083032490794
    d = S.decide(a, b, margin=0.01, paired=True)
    assert math.isnan(d.p) and math.isnan(d.p_equiv) and d.verdict == "undetermined"
    c = S.claim(a - b, 1.0)
    assert math.isnan(c.p) and c.sign == "inconclusive"
# ------------------------------------------------------------------------------------ bounded metrics


def test_bounded_interval_by_hand_logit_and_fisher_z() -> None:
    """[0, 1]: logit(m) ± t·se/(m(1−m)) mapped back with the logistic; [−1, 1]: Fisher's z of the mean,
    atanh(m) ± t·se/(1−m²) mapped back with tanh — computed here independently with scipy."""
    from scipy.special import expit, logit

    acc = [0.97, 0.99, 0.995]
    n, m, s = len(acc), float(np.mean(acc)), float(np.std(acc, ddof=1))
    h = st.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    iv = stats.bounded_t_interval(acc, (0.0, 1.0))
    assert iv.mean == pytest.approx(m) and iv.n == 3 and iv.std == pytest.approx(s)
    d = h / (m * (1 - m))
    assert (iv.low, iv.high) == pytest.approx((expit(logit(m) - d), expit(logit(m) + d)))
    r = [-0.97, -0.92, -0.99, -0.95]
    n, m, s = len(r), float(np.mean(r)), float(np.std(r, ddof=1))
    h = st.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    iv = stats.bounded_t_interval(r, (-1.0, 1.0))
    assert (iv.low, iv.high) == pytest.approx((math.tanh(math.atanh(m) - h / (1 - m * m)),
                                               math.tanh(math.atanh(m) + h / (1 - m * m))))
    assert "logit" in stats.bounded_t_interval(acc, (0.0, 1.0)).method and "Fisher z" in iv.method


@pytest.mark.parametrize(("values", "bounds"), [([0.99, 1.0], (0.0, 1.0)), ([0.0, 0.02, 0.01], (0.0, 1.0)),
                                                ([-0.99, -0.93], (-1.0, 1.0)), ([0.98, 0.999, 0.95], (-1.0, 1.0))])
def test_bounded_interval_stays_inside_where_the_t_interval_does_not(values: list[float],
                                                                     bounds: tuple[float, float]) -> None:
    plain = stats.t_interval(values)
    assert plain.low < bounds[0] or plain.high > bounds[1]
    iv = stats.bounded_t_interval(values, bounds)
    assert bounds[0] <= iv.low <= iv.mean <= iv.high <= bounds[1]


def test_bounded_interval_edges() -> None:
    """All seeds equal (also at a bound): no width, as the t-interval; one seed: none; a value outside the
    range (e.g. a percent-scale file): the plain t-interval, said so."""
    for v in ([1.0, 1.0, 1.0], [0.9, 0.9]):
        iv = stats.bounded_t_interval(v, (0.0, 1.0))
        assert iv.low == iv.high == iv.mean == v[0]
    assert math.isnan(stats.bounded_t_interval([0.9], (0.0, 1.0)).low)
    out = stats.bounded_t_interval([90.0, 95.0], (0.0, 1.0))
    plain = stats.t_interval([90.0, 95.0])
    assert (out.low, out.high) == pytest.approx((plain.low, plain.high))
    assert "outside" in out.method


def _beta(rng: np.random.Generator, mean: float, sd: float, size: tuple[int, int]) -> np.ndarray:
    """Beta draws on (0, 1) with this mean and standard deviation."""
    k = mean * (1 - mean) / sd**2 - 1
    return rng.beta(mean * k, (1 - mean) * k, size=size)


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize(("mean", "sd", "bounds"), [
    (0.98, 0.01, (0.0, 1.0)),     # accuracy near 1 (skewed away from it)
    (0.95, 0.02, (0.0, 1.0)),
    (0.03, 0.015, (0.0, 1.0)),    # an F1 near 0
    (0.95, 0.02, (-1.0, 1.0)),    # a correlation near 1
    (-0.90, 0.05, (-1.0, 1.0)),   # near −1
])
def test_bounded_interval_covers_near_the_bounds(n: int, mean: float, sd: float, bounds: tuple[float, float]) -> None:
    """2000 simulated studies of n seeds drawn from a (scaled) Beta — not the logit-normal the method assumes —
    with a known mean: the 95% bounded interval covers it 93–97% of the time and never leaves the range; the
    plain t-interval leaves the range in a share of the same studies (the reason for the bounded one)."""
    lo, hi = bounds
    rng = np.random.default_rng(29)
    u_mean, u_sd = (mean - lo) / (hi - lo), sd / (hi - lo)
    draws = lo + (hi - lo) * _beta(rng, u_mean, u_sd, (2000, n))
    ivs = [stats.bounded_t_interval(d, bounds) for d in draws]
    covered = np.mean([iv.low <= mean <= iv.high for iv in ivs])
    assert 0.93 <= covered <= 0.97, covered
    assert all(lo <= iv.low and iv.high <= hi for iv in ivs)
    if n == 3:
        outside = np.mean([not (lo <= t.low and t.high <= hi) for t in map(stats.t_interval, draws)])
        assert outside > 0.05


def test_interval_and_aggregate_take_bounds() -> None:
    v = [0.99, 1.0]
    assert stats.interval(v, bounds=(0.0, 1.0)) == stats.bounded_t_interval(v, (0.0, 1.0))
    assert stats.interval(v, kind="bootstrap", bounds=(0.0, 1.0)).high <= 1.0  # resampled means stay inside
    df = pd.DataFrame({"g": ["a", "a"], "acc": v, "loss": [0.1, 0.3]})
    agg = stats.aggregate(df, ["g"], ["acc", "loss"], bounds={"acc": (0.0, 1.0)})
    assert agg.loc[0, "acc_high"] == pytest.approx(stats.bounded_t_interval(v, (0.0, 1.0)).high)
    assert agg.loc[0, "loss_high"] == pytest.approx(stats.t_interval([0.1, 0.3]).high)
