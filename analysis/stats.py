"""Interval estimates over seeds, decisions at a practical margin (four verdicts, Holm families, seeds
needed) and the two answers to a paper's claim (sign and value).

Seeds are the unit: every interval here is over independent runs (one value per run). Student-t is the
default (for a bounded metric kept inside its range: :func:`bounded_t_interval`); a percentile bootstrap over
seeds is offered. With one seed there is no interval: ``low``/``high``
are NaN, ``method`` says so, and a verdict is ``descriptive``. Numbers only, no drawing (rliable's split):
every function maps values to an :class:`Interval`, a verdict word or a DataFrame of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

IntervalKind = Literal["t", "bootstrap", "none"]

#: How each interval is described under a table.
DESCRIPTIONS: dict[str, str] = {
    "t": "{pct}% Student-t interval over seeds (mean ± t({q}; n-1)·s/sqrt(n), s: sample std)",
    "bootstrap": "{pct}% percentile bootstrap interval over seeds ({b} resamples)",
    "none": "no interval",
}


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a two-sided interval; ``low``/``high`` are NaN when there is none."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    method: str

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN without an interval)."""
        return (self.high - self.low) / 2


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def _values_or_degenerate(values: Iterable[float]) -> tuple[np.ndarray, Optional[Interval]]:
    """The finite values (n,), and the interval to return as is when n < 2 (none: compute one)."""
    a = _clean(values)
    if len(a) == 0:
        return a, Interval(math.nan, math.nan, math.nan, 0, math.nan, "no values")
    if len(a) == 1:
        return a, Interval(float(a[0]), math.nan, math.nan, 1, math.nan, "n=1: no interval")
    return a, None


def check_confidence(confidence: float) -> float:
    """``confidence`` when it is a finite number in (0, 1); ValueError naming the fix otherwise."""
    if not isinstance(confidence, (int, float)) or not math.isfinite(confidence) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}")
    return float(confidence)


def t_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean: mean ± t_{(1+c)/2, n-1} · s / √n (s with ddof=1); none for n < 2.

    Equal to ``scipy.stats.t.interval(confidence, n-1, loc=mean, scale=sem)``.
    """
    check_confidence(confidence)
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    n, mean, std = len(a), float(a.mean()), float(a.std(ddof=1))
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, "t")


def correlation_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval:
    """Mean and interval of correlations over seeds, on Fisher's z scale: z = atanh(r) per seed, the
    Student-t interval of mean z, both mapped back with tanh (the usual way to average correlations).

    A plain t-interval on r under-covers when |r| is large (r is bounded and skewed: 79% for a nominal 95%
    in a simulation with r ≈ −0.6 and 3 seeds, against 93% on the z scale; tests/analysis/test_decomposition.py).
    ``std`` is the standard deviation of z. None for n < 2.
    """
    check_confidence(confidence)
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    z = np.arctanh(np.clip(a, -1 + 1e-12, 1 - 1e-12))
    iv = t_interval(z, confidence=confidence)
    return Interval(float(np.tanh(iv.mean)), float(np.tanh(iv.low)), float(np.tanh(iv.high)), iv.n, iv.std,
                    "t on Fisher z")


def bounded_t_interval(values: Iterable[float], bounds: tuple[float, float], *,
                       confidence: float = 0.95) -> Interval:
    """Mean of values bounded to ``bounds`` = (lo, hi) with an interval kept inside: the Student-t interval of
    the mean on the logit scale of u = (x − lo)/(hi − lo), by the delta method, mapped back:
    logit(ū) ± t_{(1+c)/2, n-1} · (s/√n)/(hi − lo) / (ū(1 − ū)). On [−1, 1] this is Fisher's z of the mean,
    atanh(m) ± t·(s/√n)/(1 − m²). ``mean`` and ``std`` are the plain ones (as the tables' means and contrasts).

    Coverage: asymptotically the confidence; with 3–10 seeds near a bound (Beta-distributed seeds, a model it
    does not assume) 93–97% of the true mean for a nominal 95% (tests/analysis/test_stats.py), where the plain
    t-interval leaves the range. All seeds equal: no width; a value outside ``bounds`` (e.g. percent scale): the
    plain t-interval, with ``method`` saying so. None for n < 2.
    """
    check_confidence(confidence)
    lo, hi = bounds
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    scale = "Fisher z" if (lo, hi) == (-1.0, 1.0) else "logit"
    if ((a < lo) | (a > hi)).any():
        plain = t_interval(a, confidence=confidence)
        return replace(plain, method=f"t (values outside [{lo:g}, {hi:g}])")
    n, mean, std = len(a), float(a.mean()), float(a.std(ddof=1))
    if std == 0:
        return Interval(mean, mean, mean, n, std, f"t on {scale}")
    u = (mean - lo) / (hi - lo)
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n) / (hi - lo) / (u * (1 - u))
    centre = math.log(u / (1 - u))
    back = lambda z: lo + (hi - lo) / (1 + math.exp(-z))  # noqa: E731
    return Interval(mean, back(centre - half), back(centre + half), n, std, f"t on {scale}")


def bootstrap_interval(values: Iterable[float], *, confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean (resampling seeds with replacement; ``scipy.stats.bootstrap``
    with ``method="percentile"``); none for n < 2.

    With few seeds the percentile bootstrap is narrower than the t-interval (it ignores that ``s`` is
    itself estimated); prefer ``t`` for n < 10.
    """
    check_confidence(confidence)
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    ci = _st.bootstrap((a,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                       vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
    return Interval(float(a.mean()), float(ci.low), float(ci.high), len(a), float(a.std(ddof=1)), "bootstrap")


def interval(values: Iterable[float], *, kind: IntervalKind = "t", confidence: float = 0.95,
             n_resamples: int = 10_000, seed: int = 0, bounds: Optional[tuple[float, float]] = None) -> Interval:
    """The interval of ``kind``: ``t`` (default; :func:`bounded_t_interval` for values bounded to ``bounds``),
    ``bootstrap`` (inside any bounds by construction: means of resampled values) or ``none`` (mean and std only)."""
    if kind == "t":
        if bounds is not None:
            return bounded_t_interval(values, bounds, confidence=confidence)
        return t_interval(values, confidence=confidence)
    if kind == "bootstrap":
        return bootstrap_interval(values, confidence=confidence, n_resamples=n_resamples, seed=seed)
    if kind == "none":
        a = _clean(values)
        n = len(a)
        mean = float(a.mean()) if n else math.nan
        std = float(a.std(ddof=1)) if n > 1 else math.nan
        return Interval(mean, math.nan, math.nan, n, std, "none")
    raise ValueError(f"unknown interval kind {kind!r}; use 't', 'bootstrap' or 'none'")


def describe(kind: IntervalKind, *, confidence: float = 0.95, n_resamples: int = 10_000) -> str:
    """One line saying which interval a table shows."""
    pct = f"{confidence * 100:g}"
    return DESCRIPTIONS[kind].format(pct=pct, q=f"{(1 + confidence) / 2:g}", b=n_resamples)


def aggregate(df: pd.DataFrame, by: Sequence[str], columns: Sequence[str], *, kind: IntervalKind = "t",
              confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0,
              bounds: Optional[Mapping[str, tuple[float, float]]] = None) -> pd.DataFrame:
    """One row per group of ``by``: for each column ``c`` of ``columns`` the fields
    ``c`` (mean), ``c_low``, ``c_high``, ``c_std`` and ``c_n`` (values that entered). ``bounds``: the range of
    a bounded column (its interval is kept inside: :func:`interval`)."""
    bounds = bounds or {}
    rows = []
    for key, g in df.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for c in columns:
            iv = interval(g[c] if c in g else [], kind=kind, confidence=confidence,
                          n_resamples=n_resamples, seed=seed, bounds=bounds.get(c))
            row.update({c: iv.mean, f"{c}_low": iv.low, f"{c}_high": iv.high, f"{c}_std": iv.std,
                        f"{c}_n": iv.n})
        rows.append(row)
    cols = list(by) + [f"{c}{s}" for c in columns for s in ("", "_low", "_high", "_std", "_n")]
    return pd.DataFrame(rows, columns=cols)


def difference(a: Iterable[float], b: Iterable[float], *, confidence: float = 0.95,
               paired: bool = False) -> Interval:
    """Interval of mean(a) − mean(b) over seeds: Welch's t (independent runs) or, with ``paired``, the
    t-interval of the per-seed differences (a[i] and b[i] share seed i). None (NaN bounds) when either side
    has fewer than two values. Equal to ``scipy.stats.ttest_ind(a, b, equal_var=False)`` /
    ``ttest_rel(a, b)``'s ``confidence_interval``."""
    check_confidence(confidence)
    x, y = _clean(a), _clean(b)
    if paired:
        if len(x) != len(y):
            raise ValueError(f"paired difference needs as many values on each side, got {len(x)} and {len(y)}")
        iv = t_interval(x - y, confidence=confidence)
        return Interval(iv.mean, iv.low, iv.high, iv.n, iv.std, "paired t" if iv.method == "t" else iv.method)
    mean = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    n = min(len(x), len(y))
    if len(x) < 2 or len(y) < 2:
        return Interval(mean, math.nan, math.nan, n, math.nan, "fewer than 2 seeds on a side: no interval")
    ci = _st.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
    se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return Interval(mean, float(ci.low), float(ci.high), n, se, "welch t")


def top_group(means: Sequence[float], lows: Sequence[float], highs: Sequence[float], *,
              higher_is_better: bool = True) -> np.ndarray:
    """Boolean mask (k,): the best row by mean and every row whose interval overlaps the best row's.

    Rows without an interval are never in the group, and with no interval on the best row the group is
    empty (single seeds: no row can be called best).
    """
    m = np.asarray(means, dtype=float)
    lo, hi = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    out = np.zeros(len(m), dtype=bool)
    if not np.isfinite(m).any():
        return out
    best = int(np.nanargmax(m) if higher_is_better else np.nanargmin(m))
    if not (np.isfinite(lo[best]) and np.isfinite(hi[best])):
        return out
    ok = np.isfinite(lo) & np.isfinite(hi)
    out[ok] = (lo[ok] <= hi[best]) & (hi[ok] >= lo[best])
    return out


# --------------------------------------------------------------------------------------------- decisions
#
# A comparison is decided at a practical margin: *equivalent* when the (1 − 2α) interval lies inside ±margin
# (two one-sided tests, TOST), *better* / *worse* when the two-sided test of "no difference" rejects,
# *undetermined* otherwise. Within a family (one table, one figure) every p is Holm-adjusted first.

#: The four verdicts of a comparison, and the word for one that cannot be tested (n < 2).
DECISIONS: tuple[str, ...] = ("better", "worse", "equivalent", "undetermined", "descriptive")

#: Default practical margins, in the metric's units (1 point of accuracy, F1, Matthews or correlation).
MARGINS: dict[str, float] = {"accuracy": 0.01, "f1": 0.01, "matthews": 0.01, "pearson": 0.01, "spearman": 0.01,
                             "pearson_spearman": 0.01, "r": 0.01, "slope": 0.01}
#: Seeds-needed search stops here (a contrast needing more is reported as needing at least this many).
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Decision:
    """One comparison decided at a margin (see the module notes and docs/comparing.md).

    ``estimate``: mean of a − b (paired: mean of the per-seed differences; one-sample: mean of the values);
    ``low``/``high``: its two-sided (1 − α) t-interval; ``low_eq``/``high_eq``: the (1 − 2α) interval TOST
    uses; ``p``: two-sided p of "estimate == 0" (one-sample: == reference); ``p_equiv``: TOST p (the larger of
    the one-sided p's of "≤ −margin" and "≥ +margin"); ``p_adj``/``p_equiv_adj``: Holm-adjusted within the
    family (== p alone); ``n``: pairs (paired) or the smaller number of seeds of a side; ``low_n``: n below
    :func:`seeds_needed` for the observed sd and estimate. Added beside the contract: ``sd`` (of the paired
    differences / of the values; Welch: sqrt(s_a² + s_b²), the sd of one seed's difference), ``df``, ``se``,
    ``alpha``, ``higher_is_better``, ``reference``, ``n_needed``.
    """

    estimate: float
    low: float
    high: float
    low_eq: float
    high_eq: float
    n: int
    paired: bool
    margin: float
    p: float
    p_equiv: float
    p_adj: float
    p_equiv_adj: float
    verdict: str
    low_n: bool
    sd: float = math.nan
    df: float = math.nan
    se: float = math.nan
    alpha: float = 0.05
    higher_is_better: bool = True
    reference: float = 0.0
    n_needed: int = 0


def default_margin(metric: str) -> float:
    """The practical margin of ``metric`` (``eval/accuracy`` and ``accuracy`` alike): :data:`MARGINS`, else
    0.01 (one point of a 0–1 score); ``--margin`` overrides it."""
    base = str(metric).split("/")[-1]
    return MARGINS.get(base, 0.01)


def _check_margin(margin: float) -> float:
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be a finite number > 0 in the metric's units, e.g. 0.01; got {margin!r}")
    return float(margin)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (k,): sorted ascending p_(1) ≤ … ≤ p_(m), adj_(i) =
    max_{j ≤ i} min(1, (m − j + 1)·p_(j)), in the input's order. NaN p's stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def decision_word(estimate: float, p_adj: float, p_equiv_adj: float, *, alpha: float, higher_is_better: bool,
          n: int, se: float) -> str:
    """The verdict from the (adjusted) p's: equivalent, better / worse, undetermined; descriptive when
    untested (n < 2); a zero-width interval (se == 0) is undetermined, never decided."""
    if n < 2 or not math.isfinite(se):
        return "descriptive"
    if se <= 1e-12 * max(1.0, abs(estimate)):
        return "undetermined"
    if p_equiv_adj < alpha:
        return "equivalent"
    if p_adj < alpha:
        return "better" if (estimate > 0) == higher_is_better else "worse"
    return "undetermined"


def _moments(a: np.ndarray, b: Optional[np.ndarray], paired: bool,
             reference: float) -> tuple[float, float, float, float, int]:
    """(estimate, sd, se, df, n) of a one-sample, paired or Welch comparison (NaN se / df when n < 2)."""
    if b is None or paired:
        d = a - reference if b is None else a - b
        n = len(d)
        est = float(d.mean()) + (reference if b is None else 0.0) if n else math.nan
        sd = float(d.std(ddof=1)) if n > 1 else math.nan
        return est, sd, sd / math.sqrt(n) if n > 1 else math.nan, float(n - 1) if n > 1 else math.nan, n
    na, nb = len(a), len(b)
    est = float(a.mean() - b.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return est, math.nan, math.nan, math.nan, min(na, nb)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if va + vb > 0 else float(na + nb - 2)
    return est, math.sqrt(a.var(ddof=1) + b.var(ddof=1)), se, float(df), min(na, nb)


def decide(a: Iterable[float], b: Optional[Iterable[float]] = None, *, margin: float, paired: bool,
           higher_is_better: bool = True, alpha: float = 0.05, reference: Optional[float] = None) -> Decision:
    """Decide ``a`` against ``b`` (paired t on a[i] − b[i], or Welch's t) or, with ``b=None``, the mean of
    ``a`` against the number ``reference``, at the practical ``margin``. Alone in its family (p_adj == p);
    :func:`decide_family` adjusts a family. p, intervals: equal to ``scipy.stats.ttest_rel`` /
    ``ttest_ind(equal_var=False)`` / ``ttest_1samp`` and their ``confidence_interval``."""
    _check_margin(margin)
    check_confidence(1 - 2 * alpha)
    x = _clean(a)
    if b is None and reference is None:
        raise ValueError("decide: give b (the other side) or reference (a number to compare with)")
    y = None if b is None else _clean(b)
    if y is not None and paired and len(x) != len(y):
        raise ValueError(f"paired decision needs as many values on each side, got {len(x)} and {len(y)}")
    ref = float(reference) if b is None else 0.0
    est, sd, se, df, n = _moments(x, y, paired and y is not None, ref)
    delta = est - ref  # distance from the null value
    if math.isfinite(se) and se > 1e-12 * max(1.0, abs(est)):  # s = 0 up to rounding: no test, undetermined
        t0 = delta / se
        p = float(2 * _st.t.sf(abs(t0), df))
        p_equiv = float(max(_st.t.sf((delta + margin) / se, df), _st.t.cdf((delta - margin) / se, df)))
        q, q_eq = float(_st.t.ppf(1 - alpha / 2, df)), float(_st.t.ppf(1 - alpha, df))
        low, high, low_eq, high_eq = est - q * se, est + q * se, est - q_eq * se, est + q_eq * se
    else:
        p = p_equiv = math.nan
        low = high = low_eq = high_eq = (est if math.isfinite(se) else math.nan)
    needed = seeds_needed(sd, delta, margin=margin, alpha=alpha, paired=paired or y is None) \
        if math.isfinite(sd) and sd > 0 else 0
    word = decision_word(est - ref, p, p_equiv, alpha=alpha, higher_is_better=higher_is_better, n=n, se=se)
    return Decision(est, low, high, low_eq, high_eq, n, bool(paired and y is not None), float(margin), p, p_equiv,
                    p, p_equiv, word, n < needed, sd, df, se, alpha, higher_is_better, ref, needed)


def decide_family(decisions: Sequence[Decision], *, alpha: float = 0.05) -> list[Decision]:
    """The decisions of one family with Holm-adjusted p's (every member's ``p`` and ``p_equiv`` together:
    one family of 2k hypotheses) and verdicts re-made from them."""
    ps = [x for d in decisions for x in (d.p, d.p_equiv)]
    adj = holm(ps)
    out = []
    for i, d in enumerate(decisions):
        pa, pe = float(adj[2 * i]), float(adj[2 * i + 1])
        word = decision_word(d.estimate - d.reference, pa, pe, alpha=alpha, higher_is_better=d.higher_is_better, n=d.n,
                     se=d.se)
        out.append(replace(d, p_adj=pa, p_equiv_adj=pe, verdict=word, alpha=alpha))
    return out


def _power(n: int, sd: float, diff: float, margin: float, alpha: float, paired: bool) -> float:
    """Probability that n seeds (pairs, or per side) decide — equivalent (TOST inside ±margin) or different
    from 0 (two-sided test) — when the true difference is ``diff`` and one seed's difference has sd ``sd``.

    Given the estimated sd, each decision is an interval of the sample mean x ~ N(diff, sd²/n): different
    when |x| > q₂·ŝe, equivalent when −margin + q₁·ŝe < x < margin − q₁·ŝe; their union's normal probability
    is averaged over 256 quantiles of ŝe (σ·sqrt(χ²_df / df) / sqrt(n); df = n − 1 paired, 2(n − 1) per side)."""
    df = n - 1 if paired else 2 * (n - 1)
    se = sd / math.sqrt(n)
    u = (np.arange(256) + 0.5) / 256
    se_hat = se * np.sqrt(_st.chi2.ppf(u, df) / df)
    q2, q1 = _st.t.ppf(1 - alpha / 2, df), _st.t.ppf(1 - alpha, df)
    cdf = lambda x: _st.norm.cdf((x - diff) / se)  # noqa: E731 - the mean's distribution
    different = cdf(-q2 * se_hat) + 1 - cdf(q2 * se_hat)
    lo, hi = np.maximum(-margin + q1 * se_hat, -q2 * se_hat), np.minimum(margin - q1 * se_hat, q2 * se_hat)
    equivalent_only = np.where(hi > lo, cdf(hi) - cdf(lo), 0.0)
    return float(np.mean(different + equivalent_only))


def seeds_needed(sd_diff: float, true_diff: float, *, margin: float, alpha: float = 0.05, power: float = 0.8,
                 paired: bool = True) -> int:
    """The fewest seeds (pairs; ``paired=False``: per side, ``sd_diff`` = sqrt(s_a² + s_b²)) with which a
    contrast is decided — equivalent at the margin, or different from 0 — with probability ``power`` when the
    difference is ``true_diff`` and one seed's difference has sd ``sd_diff`` (alone, before any Holm
    adjustment). At least 2; at most :data:`MAX_SEEDS` (returned when even that is not enough)."""
    _check_margin(margin)
    if not (math.isfinite(sd_diff) and sd_diff > 0 and math.isfinite(true_diff)):
        raise ValueError(f"seeds_needed: sd_diff must be > 0 and true_diff finite, got {sd_diff!r}, {true_diff!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    return _first(lambda n: _power(n, sd_diff, true_diff, margin, alpha, paired) >= power)


def _first(ok: Callable[[int], bool]) -> int:
    """The first n in 2..MAX_SEEDS with ok(n) (ok grows with n), MAX_SEEDS when none."""
    if not ok(MAX_SEEDS):
        return MAX_SEEDS
    lo, hi = 2, 2
    while not ok(hi):
        lo, hi = hi + 1, min(2 * hi, MAX_SEEDS)
    while lo < hi:  # power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


# --------------------------------------------------------------------------------------------- paper claims

@dataclass(frozen=True)
class Claim:
    """A paper's claim about a quantity, checked on per-seed values: two answers.

    ``sign``: agrees / disagrees / inconclusive with the claimed sign, from ``p_adj`` (Holm within the claim's
    family) of the two-sided t-test of 0; descriptive with fewer than 2 seeds. ``value``: ``inside`` /
    ``outside`` — the paper's number inside the (1 − α) interval or not — with ``p_value`` (one-sample t-test
    against it) and ``p_value_adj`` (Holm over the family's value tests); ``no paper value`` without one.
    ``fisher``: the test and interval are on Fisher's z scale (correlations), bounds mapped back."""

    estimate: float
    low: float
    high: float
    n: int
    p: float
    p_adj: float
    sign: str
    paper: float
    p_value: float
    p_value_adj: float
    value: str
    fisher: bool = False
    alpha: float = 0.05


def _sign_word(estimate: float, p_adj: float, expected_sign: float, n: int, width: float, alpha: float) -> str:
    if n < 2 or not math.isfinite(width) or not math.isfinite(expected_sign) or expected_sign == 0:
        return "descriptive"
    if width <= 1e-12 * max(1.0, abs(estimate)) or not p_adj < alpha:
        return "inconclusive"
    return "agrees" if estimate * expected_sign > 0 else "disagrees"


def _value_word(paper: float, low: float, high: float, n: int) -> str:
    if not math.isfinite(paper):
        return "no paper value"
    if n < 2 or not (math.isfinite(low) and math.isfinite(high)):
        return "descriptive"
    return "inside" if low <= paper <= high else "outside"


def claim(values: Iterable[float], expected_sign: float, *, paper: float = math.nan, alpha: float = 0.05,
          fisher: bool = False) -> Claim:
    """Check a claimed sign (and, with ``paper``, a claimed value) on per-seed ``values`` (n,), alone in its
    family (p_adj == p); :func:`claim_family` adjusts a family. ``fisher``: correlations, tested on z = atanh(r)
    (as :func:`correlation_interval`). p's equal ``scipy.stats.ttest_1samp``'s."""
    check_confidence(1 - alpha)
    a = _clean(values)
    z = np.arctanh(np.clip(a, -1 + 1e-12, 1 - 1e-12)) if fisher else a
    back = np.tanh if fisher else (lambda v: v)
    iv = t_interval(z, confidence=1 - alpha)
    n = iv.n
    p = p_val = math.nan
    if n > 1 and iv.std > 1e-12 * max(1.0, abs(iv.mean)):  # every seed the same value (up to rounding): no test
        se = iv.std / math.sqrt(n)
        p = float(2 * _st.t.sf(abs(iv.mean) / se, n - 1))
        if math.isfinite(paper):
            zp = float(np.arctanh(np.clip(paper, -1 + 1e-12, 1 - 1e-12))) if fisher else paper
            p_val = float(2 * _st.t.sf(abs(iv.mean - zp) / se, n - 1))
    est, low, high = (float(back(v)) if math.isfinite(v) else math.nan for v in (iv.mean, iv.low, iv.high))
    width = iv.high - iv.low
    return Claim(est, low, high, n, p, p, _sign_word(est, p, expected_sign, n, width, alpha), float(paper), p_val,
                 p_val, _value_word(paper, low, high, n), fisher, alpha)


def claim_family(claims: Sequence[Claim], expected_signs: Sequence[float]) -> list[Claim]:
    """The claims of one family (one figure, one table) with Holm-adjusted p's: over the sign tests, and
    separately over the value tests; sign words re-made from the adjusted p's."""
    ps, pv = holm([c.p for c in claims]), holm([c.p_value for c in claims])
    out = []
    for c, s, pa, pva in zip(claims, expected_signs, ps, pv):
        width = c.high - c.low
        out.append(replace(c, p_adj=float(pa), p_value_adj=float(pva),
                           sign=_sign_word(c.estimate, float(pa), s, c.n, width, c.alpha)))
    return out
