"""Interval estimates over seeds, and verdicts decided by them.

Seeds are the unit: every interval here is over independent runs (one value per run). Student-t is the
default; a percentile bootstrap over seeds is offered. With one seed there is no interval: ``low``/``high``
are NaN, ``method`` says so, and a verdict is ``descriptive``. Numbers only, no drawing (rliable's split):
every function maps values to an :class:`Interval`, a verdict word or a DataFrame of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

IntervalKind = Literal["t", "bootstrap", "none"]
#: How a measured interval compares with a claim about the sign of a quantity.
Verdict = Literal["agrees", "disagrees", "inconclusive", "descriptive"]
VERDICTS: tuple[str, ...] = ("agrees", "disagrees", "inconclusive", "descriptive")

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
             n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """The interval of ``kind``: ``t`` (default), ``bootstrap`` or ``none`` (mean and std only)."""
    if kind == "t":
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
              confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by``: for each column ``c`` of ``columns`` the fields
    ``c`` (mean), ``c_low``, ``c_high``, ``c_std`` and ``c_n`` (values that entered)."""
    rows = []
    for key, g in df.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for c in columns:
            iv = interval(g[c] if c in g else [], kind=kind, confidence=confidence,
                          n_resamples=n_resamples, seed=seed)
            row.update({c: iv.mean, f"{c}_low": iv.low, f"{c}_high": iv.high, f"{c}_std": iv.std,
                        f"{c}_n": iv.n})
        rows.append(row)
    cols = list(by) + [f"{c}{s}" for c in columns for s in ("", "_low", "_high", "_std", "_n")]
    return pd.DataFrame(rows, columns=cols)


def verdict(iv: Interval, expected_sign: float) -> str:
    """How the interval ``iv`` of a quantity compares with a claim that its sign is ``expected_sign``.

    ``agrees``: the whole interval lies on the claimed side of 0; ``disagrees``: on the other side;
    ``inconclusive``: it contains 0, or it has no width (every seed gave the same value: with few seeds and
    a discrete metric, e.g. accuracy differing by one example in each of 3 seeds, s = 0 says nothing about
    the spread between seeds, and a zero-width t-interval is no evidence); ``descriptive``: no interval
    (one seed) or no claim to compare with.
    """
    if not math.isfinite(expected_sign) or expected_sign == 0 or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "descriptive"
    if iv.high - iv.low <= 1e-12 * max(1.0, abs(iv.mean)):
        return "inconclusive"
    lo, hi = (iv.low, iv.high) if expected_sign > 0 else (-iv.high, -iv.low)
    if lo > 0:
        return "agrees"
    if hi < 0:
        return "disagrees"
    return "inconclusive"


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
