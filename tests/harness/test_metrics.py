"""GLUE metrics against scikit-learn and scipy on the same predictions."""

import numpy as np
import pytest
from scipy import stats
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


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.uniform(0, 5, 400), 1)  # ties, like STS-B scores
    pred = ref + rng.normal(0, 1, 400)
    assert metrics.pearson(pred, ref) == pytest.approx(stats.pearsonr(pred, ref)[0])
    assert metrics.spearman(pred, ref) == pytest.approx(stats.spearmanr(pred, ref)[0])
    out = metrics.compute(("pearson", "spearman"), pred, ref)
    assert out["pearson_spearman"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)


def test_every_metric_says_its_direction() -> None:
    assert all(isinstance(m.higher_is_better, bool) for m in metrics.METRICS.values())
    assert not metrics.METRICS["mse"].higher_is_better
