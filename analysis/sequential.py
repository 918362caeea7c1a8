"""Adding seeds in batches until a contrast is decided: repeated confidence intervals with a Pocock-type boundary.

A sequential sweep looks at the runs after each batch of seeds (the planned looks n_1 < n_2 < … < n_K, e.g.
2, 4, 6, 8, 10 seeds) and stops a contrast once it is decided. Looking K times at 95% intervals would decide
wrongly more often than 5%; here every look uses the same *nominal* level α′ < α (Pocock's constant boundary on
the p scale: the t-quantile of each look's own degrees of freedom), with α′ chosen so that under the null the
chance that *any* look rejects is α. The t statistics of the looks share their seeds, so α′ is found by a
deterministic Monte Carlo of the cumulative one-sample t statistics at the look sizes (normal per-seed values;
:func:`boundary`). The intervals est ± t(1 − α′/2; n_k − 1)·se are repeated confidence intervals: they cover the
true difference at all looks at once with probability 1 − α, so the interval at whatever look the sweep stops
keeps ≥ 1 − α coverage. p-values: the repeated p of a look is the null probability that some look gives a
nominal p at least as small (valid at a data-dependent stop), so Holm over a family still applies
(:func:`analysis.stats.decide_family`).

The boundary assumes paired differences (runs of both sides share seed and data order: the sequential sweep runs
every arm at the same seeds); an unpaired (Welch) contrast uses the same α′ with its own degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats as _st

from analysis import stats as S

#: Studies in the Monte Carlo of :func:`boundary` (the α′ it finds is within ~0.0005 of the exact one).
N_SIM = 40_000


def planned_looks(batch: int, max_seeds: int) -> tuple[int, ...]:
    """The seed counts at which a sequential sweep looks: batch, 2·batch, … and ``max_seeds`` last."""
    if not (isinstance(batch, int) and isinstance(max_seeds, int)) or batch < 2 or max_seeds < batch:
        raise ValueError(f"sequential looks need batch >= 2 and max_seeds >= batch (integers), got batch={batch!r}, "
                         f"max_seeds={max_seeds!r}")
    out = list(range(batch, max_seeds + 1, batch))
    if out[-1] != max_seeds:
        out.append(max_seeds)
    return tuple(out)


@dataclass(frozen=True)
class Boundary:
    """The null distribution of the smallest nominal p over the looks, from :func:`boundary`.

    ``min_two`` / ``min_one``: sorted samples (N_SIM,) of min over looks of the two-sided / one-sided
    (upper) nominal t-test p-value of the cumulative seeds."""

    looks: tuple[int, ...]
    min_two: np.ndarray
    min_one: np.ndarray

    def nominal(self, alpha: float, *, two_sided: bool = True) -> float:
        """α′: the per-look nominal level at which the chance that any look rejects is ``alpha``."""
        samples = self.min_two if two_sided else self.min_one
        return float(np.quantile(samples, alpha, method="inverted_cdf"))

    def repeated_p(self, nominal_p: float, *, two_sided: bool = True) -> float:
        """The repeated p-value of a look whose nominal p is ``nominal_p``: P(min over looks ≤ nominal_p)."""
        if not math.isfinite(nominal_p):
            return math.nan
        samples = self.min_two if two_sided else self.min_one
        return float(np.searchsorted(samples, nominal_p, side="right") / len(samples))


def boundary(looks: Sequence[int], *, n_sim: int = N_SIM, seed: int = 0) -> Boundary:
    """Monte Carlo of ``n_sim`` null studies of normal per-seed values (``default_rng(seed)``: deterministic):
    at each look n_k the t statistic of the first n_k values and its nominal p with n_k − 1 degrees of freedom;
    per study the smallest over the looks."""
    lk = np.asarray(sorted(set(int(n) for n in looks)))
    if len(lk) == 0 or lk[0] < 2:
        raise ValueError(f"looks must be seed counts >= 2, got {list(looks)}")
    x = np.random.default_rng(seed).standard_normal((n_sim, int(lk[-1])))
    c1, c2 = np.cumsum(x, axis=1)[:, lk - 1], np.cumsum(x * x, axis=1)[:, lk - 1]
    mean = c1 / lk
    var = (c2 - lk * mean ** 2) / (lk - 1)
    t = mean / np.sqrt(var / lk)
    df = lk - 1
    return Boundary(tuple(int(n) for n in lk), np.sort((2 * _st.t.sf(np.abs(t), df)).min(axis=1)),
                    np.sort(_st.t.sf(t, df).min(axis=1)))


def decide(a: Iterable[float], b: Optional[Iterable[float]] = None, *, bound: Boundary, margin: float,
           paired: bool = True, higher_is_better: bool = True, alpha: float = 0.05,
           reference: Optional[float] = None) -> S.Decision:
    """:func:`analysis.stats.decide` at one look of a sequential study: the intervals are the repeated ones
    (nominal level α′ of ``bound``; the TOST interval at one-sided α′), ``p`` and ``p_equiv`` the repeated
    p-values. The verdict words follow the same rules."""
    d = S.decide(a, b, margin=margin, paired=paired, higher_is_better=higher_is_better, alpha=alpha,
                 reference=reference)
    if not (math.isfinite(d.se) and d.se > 0):
        return d
    a2, a1 = bound.nominal(alpha), bound.nominal(alpha, two_sided=False)
    q, q_eq = float(_st.t.ppf(1 - a2 / 2, d.df)), float(_st.t.ppf(1 - a1, d.df))
    delta = d.estimate - d.reference
    p = bound.repeated_p(float(2 * _st.t.sf(abs(delta) / d.se, d.df)))
    p_eq = max(bound.repeated_p(float(_st.t.sf((delta + margin) / d.se, d.df)), two_sided=False),
               bound.repeated_p(float(_st.t.cdf((delta - margin) / d.se, d.df)), two_sided=False))
    word = S.decision_word(delta, p, p_eq, alpha=alpha, higher_is_better=higher_is_better, n=d.n, se=d.se)
    return S.Decision(d.estimate, d.estimate - q * d.se, d.estimate + q * d.se, d.estimate - q_eq * d.se,
                      d.estimate + q_eq * d.se, d.n, d.paired, d.margin, p, p_eq, p, p_eq, word, d.low_n,
                      d.sd, d.df, d.se, alpha, higher_is_better, d.reference, d.n_needed)


def undecided(verdicts: Iterable[str]) -> list[int]:
    """Indices of the contrasts (by their verdicts) a sequential sweep still has to add seeds for: neither
    equivalent, better nor worse (a descriptive one, with fewer than 2 seeds, too)."""
    return [i for i, v in enumerate(verdicts) if v in ("undetermined", "descriptive")]

