"""GLUE's official metrics in numpy and scipy (checked against scikit-learn and written-out formulas in the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy import stats


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    """Share of equal labels."""
    return float(np.mean(pred == ref))


def f1_binary(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 of the positive class (label 1), 0 when undefined."""
    tp = float(np.sum((pred == 1) & (ref == 1)))
    fp = float(np.sum((pred == 1) & (ref != 1)))
    fn = float(np.sum((pred != 1) & (ref == 1)))
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews(pred: np.ndarray, ref: np.ndarray) -> float:
    """Matthews correlation coefficient (binary or multi-class, Gorodkin's form), 0 when undefined."""
    classes = np.union1d(pred, ref)
    idx_p = np.searchsorted(classes, pred)
    idx_r = np.searchsorted(classes, ref)
    c = np.zeros((len(classes), len(classes)))
    np.add.at(c, (idx_r, idx_p), 1)
    t, p = c.sum(axis=1), c.sum(axis=0)
    n, correct = c.sum(), np.trace(c)
    cov_yp = correct * n - t @ p
    cov_pp = n * n - p @ p
    cov_yy = n * n - t @ t
    denom = np.sqrt(cov_pp * cov_yy)
    return float(cov_yp / denom) if denom else 0.0


def pearson(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation (``scipy.stats.pearsonr``), 0 when a side is constant (scipy: NaN and a warning)."""
    x, y = pred.astype(np.float64), ref.astype(np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.pearsonr(x, y).statistic)


def spearman(pred: np.ndarray, ref: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the average ranks (``scipy.stats.rankdata``, ties share their
    mean rank), 0 when a side is constant."""
    return pearson(stats.rankdata(pred), stats.rankdata(ref))


@dataclass(frozen=True)
class Metric:
    """A metric with its direction (every table says whether higher is better) and, for a bounded one, the range
    its formula can reach (intervals over seeds are kept inside it: analysis.stats.bounded_t_interval)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True
    bounds: Optional[tuple[float, float]] = None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy, bounds=(0.0, 1.0)),
        Metric("f1", f1_binary, bounds=(0.0, 1.0)),
        Metric("matthews", matthews, bounds=(-1.0, 1.0)),
        Metric("pearson", pearson, bounds=(-1.0, 1.0)),
        Metric("spearman", spearman, bounds=(-1.0, 1.0)),
        Metric("mse", lambda p, r: float(np.mean((p - r) ** 2)), higher_is_better=False),
        # generation: the share of answers scored correct (pred: the scores 1/0, ref: ones; harness/rgdata.py)
        Metric("exact_match", accuracy, bounds=(0.0, 1.0)),
    )
}


#: prefixes of a metric's name in summary.json / metrics.jsonl (``eval/accuracy``, ``best_valid/f1``)
PREFIXES = ("eval/", "valid/", "best/", "best_valid/", "test/")


def metric_range(name: str) -> Optional[tuple[float, float]]:
    """The range of metric ``name`` (bare or with a summary prefix), None for an unbounded or unknown one;
    ``pearson_spearman``, the mean of two correlations, has theirs."""
    base = name
    for prefix in PREFIXES:
        base = base.removeprefix(prefix)
    if base == "pearson_spearman":
        base = "pearson"
    return METRICS[base].bounds if base in METRICS else None


def compute(names: tuple[str, ...], pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Named metrics of predictions ``pred`` (N,) against references ``ref`` (N,)."""
    out = {n: METRICS[n].fn(pred, ref) for n in names}
    if "pearson" in out and "spearman" in out:
        out["pearson_spearman"] = (out["pearson"] + out["spearman"]) / 2
    return out
