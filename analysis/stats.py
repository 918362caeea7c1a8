"""Interval estimates over seeds: Student-t (the default) and a percentile bootstrap.

Numbers only, no drawing (rliable's split): every function maps values to an :class:`Interval` or a
DataFrame of them. With one seed there is no interval: ``low``/``high`` are NaN and ``method`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Sequence

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


def t_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean: mean ± t_{(1+c)/2, n-1} · s / √n (s with ddof=1); none for n < 2.

    Equal to ``scipy.stats.t.interval(confidence, n-1, loc=mean, scale=sem)``.
    """
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    n, mean, std = len(a), float(a.mean()), float(a.std(ddof=1))
    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, "t")


def bootstrap_interval(values: Iterable[float], *, confidence: float = 0.95, n_resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean (resampling seeds with replacement); none for n < 2.

    With few seeds the percentile bootstrap is narrower than the t-interval (it ignores that ``s`` is
    itself estimated); prefer ``t`` for n < 10.
    """
    a, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    n, mean = len(a), float(a.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    means = a[idx].mean(axis=1)  # (n_resamples,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean, float(low), float(high), n, float(a.std(ddof=1)), "bootstrap")


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
