"""Sequential seeds: the Pocock-type boundary by Monte Carlo, its error rate and the coverage of the repeated
intervals where the study stops (skewed and heavy-tailed per-seed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from analysis import sequential as Q
from analysis import stats as S

LOOKS = Q.planned_looks(2, 10)


@pytest.fixture(scope="module")
def bound() -> Q.Boundary:
    return Q.boundary(LOOKS)


def test_planned_looks() -> None:
    assert Q.planned_looks(2, 10) == (2, 4, 6, 8, 10) and Q.planned_looks(3, 10) == (3, 6, 9, 10)
    with pytest.raises(ValueError, match="batch"):
        Q.planned_looks(1, 10)


def test_boundary_is_deterministic_and_below_alpha(bound: Q.Boundary) -> None:
    again = Q.boundary(LOOKS)
    assert bound.nominal(0.05) == again.nominal(0.05)
    a2 = bound.nominal(0.05)
    assert 0.005 < a2 < 0.05 and bound.nominal(0.05, two_sided=False) < 0.05
    one = Q.boundary((5,))  # a single look: the plain t-test's level
    assert one.nominal(0.05) == pytest.approx(0.05, abs=0.004)
    assert bound.repeated_p(a2) == pytest.approx(0.05, abs=1e-3)


def _stopped(d: np.ndarray, bound: Q.Boundary, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised sequential study (studies, max n): the mean, the half-widths (two-sided) and whether it
    decided, at the first look that decides (else the last). The formulas of Q.decide."""
    a2, a1 = bound.nominal(0.05), bound.nominal(0.05, two_sided=False)
    lk = np.asarray(bound.looks)
    c1, c2 = np.cumsum(d, axis=1)[:, lk - 1], np.cumsum(d * d, axis=1)[:, lk - 1]
    mean = c1 / lk
    se = np.sqrt((c2 - lk * mean ** 2) / (lk - 1) / lk)
    half, half_eq = st.t.ppf(1 - a2 / 2, lk - 1) * se, st.t.ppf(1 - a1, lk - 1) * se
    decided = (np.abs(mean) > half) | ((mean - half_eq > -margin) & (mean + half_eq < margin))
    stop = np.where(decided.any(axis=1), decided.argmax(axis=1), len(lk) - 1)
    rows = np.arange(len(d))
    return mean[rows, stop], half[rows, stop], decided[rows, stop]


def test_vectorised_study_is_the_function(bound: Q.Boundary) -> None:
    rng = np.random.default_rng(2)
    d = 0.01 * rng.standard_t(3, (5, 10))
    mean, half, _ = _stopped(d, bound, 0.01)
    for i in range(5):
        n = next((k for k in bound.looks if Q.decide(d[i, :k], np.zeros(k), bound=bound, margin=0.01).verdict
                  not in ("undetermined", "descriptive")), bound.looks[-1])
        dec = Q.decide(d[i, :n], np.zeros(n), bound=bound, margin=0.01)
        assert dec.estimate == pytest.approx(mean[i]) and (dec.high - dec.low) / 2 == pytest.approx(half[i])


def test_any_look_errs_at_most_alpha_under_the_null(bound: Q.Boundary) -> None:
    rng = np.random.default_rng(8)
    d = rng.standard_normal((20_000, 10))
    a2 = bound.nominal(0.05)
    lk = np.asarray(LOOKS)
    t = np.stack([st.ttest_1samp(d[:, :k], 0, axis=1).pvalue for k in lk], axis=1)
    assert np.mean((t < a2).any(axis=1)) == pytest.approx(0.05, abs=0.006)
    assert np.mean((t < 0.05).any(axis=1)) > 0.08  # looking 5 times at 95% errs more (the test can fail)


@pytest.mark.parametrize("noise", ["lognormal", "t3", "normal"])
@pytest.mark.parametrize("true", [0.0, 0.005, 0.01, 0.02])
def test_sequential_intervals_cover(bound: Q.Boundary, noise: str, true: float) -> None:
    """Per-seed values skewed (lognormal on both sides), heavy-tailed (t3) or normal; the study stops at the
    first decided look: the repeated interval there covers the true difference at least 93% of the time, and
    at most 98.5%: Pocock's repeated intervals cover all looks at once, so at the stop they are conservative
    (0.94-0.98 measured here; the plain t-interval at the stop covers only 0.89-0.93)."""
    rng = np.random.default_rng(21)
    draw = {"lognormal": lambda s: rng.lognormal(0, 0.5, s), "t3": lambda s: rng.standard_t(3, s),
            "normal": rng.standard_normal}[noise]
    d = true + 0.01 * (draw((4000, 10)) - draw((4000, 10)))
    mean, half, _ = _stopped(d, bound, 0.01)
    cover = float(np.mean(np.abs(mean - true) <= half))
    assert 0.93 <= cover <= 0.985, cover


def test_undecided_lists_the_contrasts_to_continue(bound: Q.Boundary) -> None:
    base = np.linspace(0.8, 0.82, 6)
    ds = [Q.decide(base + 0.05 + np.array([0, .001, -.001, .002, 0, -.002]), base, bound=bound, margin=0.01),
          Q.decide(base + np.array([0.03, -0.03, 0.02, -0.02, 0.01, -0.01]), base, bound=bound, margin=0.01),
          S.decide([0.8], [0.7], margin=0.01, paired=True)]
    assert Q.undecided([d.verdict for d in ds]) == [1, 2]
