"""GLUE metrics against scikit-learn and scipy on the same predictions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from harness import metrics


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.7, ref, 1 - ref)
    assert metrics.accuracy(pred, ref) == pytest.approx(skm.accuracy_score(ref, pred))
    assert metrics.f1_binary(pred, ref) == pytest.approx(skm.f1_score(ref, pred))
    assert metrics.matthews(pred, ref) == pytest.approx(skm.matthews_corrcoef(ref, pred))


def test_matthews_multiclass_and_degenerate() -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 3, 200)
    pred = rng.integers(0, 3, 200)
    assert metrics.matthews(pred, ref) == pytest.approx(skm.matthews_corrcoef(ref, pred))
    const = np.zeros(10, dtype=int)
    assert metrics.matthews(const, rng.integers(0, 2, 10)) == 0.0


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of their positions (written out: each value's rank is the mean
    of 1 + the count of smaller values and the count of values not larger)."""
    return np.array([((a < v).sum() + 1 + (a <= v).sum()) / 2 for v in a])


def test_spearman_ties_and_constant_inputs() -> None:
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert metrics.spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 3, 2, 4])[0, 1])
    assert metrics.pearson(np.ones(5), np.arange(5.0)) == 0.0 and metrics.spearman(np.arange(5.0), np.ones(5)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_the_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.uniform(0, 5, 400), 1)  # ties, like STS-B scores
    pred = ref + rng.normal(0, 1, 400)
    assert metrics.pearson(pred, ref) == pytest.approx(np.corrcoef(pred, ref)[0, 1])
    assert metrics.spearman(pred, ref) == pytest.approx(np.corrcoef(average_ranks(pred), average_ranks(ref))[0, 1])
    out = metrics.compute(("pearson", "spearman"), pred, ref)
    assert out["pearson_spearman"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)


def test_every_metric_says_its_direction() -> None:
    assert all(isinstance(m.higher_is_better, bool) for m in metrics.METRICS.values())
    assert not metrics.METRICS["mse"].higher_is_better


def test_metric_ranges() -> None:
    """Each bounded metric knows its range (the one its formula can reach), looked up through the summary's
    prefixes; unbounded ones have none."""
    from harness.metrics import metric_range

    for name in ("accuracy", "f1", "exact_match", "eval/accuracy", "best/f1", "valid/accuracy"):
        assert metric_range(name) == (0.0, 1.0), name
    for name in ("matthews", "pearson", "spearman", "pearson_spearman", "eval/matthews"):
        assert metric_range(name) == (-1.0, 1.0), name
    for name in ("mse", "loss", "eval/loss", "train_seconds"):
        assert metric_range(name) is None, name
    rng = np.random.default_rng(0)
    for _ in range(50):  # the formulas stay in their ranges on random predictions
        pred, ref = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
        x, y = rng.normal(size=40), rng.normal(size=40)
        for name in ("accuracy", "f1", "matthews", "pearson", "spearman"):
            value = metrics.METRICS[name].fn(*((pred, ref) if name in ("accuracy", "f1", "matthews") else (x, y)))
            low, high = metric_range(name)
            assert low <= value <= high
