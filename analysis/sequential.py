"""Adding seeds in batches until a contrast is decided: an O'Brien–Fleming-type group-sequential boundary on
the looks' t-tests, and the interval printed at the look where the sweep stops.

A sequential sweep looks at the runs after each batch of seeds (the planned looks n_1 < n_2 < … < n_K, e.g.
2, 4, 6, 8, 10 seeds) and stops once every contrast is decided. Two things are reported per contrast and look,
with two different guarantees:

**The verdict: the error of repeated looks controlled.** Looking K times at 5% tests would decide wrongly more
often than 5%. Each look's t-test p (its own n_k − 1 degrees of freedom; Welch's df unpaired) is turned into
its normal equivalent W_k = Φ⁻¹(1 − p_k/2) and scaled by the information fraction,
S_k = W_k·(n_k/n_K)^(1/2 − Δ); the test rejects at a look where S_k ≥ C_α, C_α being the (1 − α) quantile of
max_k S_k under the null. Δ = 0 is O'Brien & Fleming's shape (the default: the nominal level grows from
≈ 0 at 2 seeds to α′_K = 0.0387 at the cap for looks 2, 4, …, 10); Δ = 1/2 is Pocock's constant level (0.0137
at every look; ``shape="pocock"``). C_α is exact for the looks and their degrees of freedom, not a normal
approximation: a deterministic Monte Carlo of N_SIM null studies of the cumulative one-sample t statistics
(normal per-seed values; :func:`boundary`), within ~0.02 of the multivariate-normal integral at large n and
checked against a brute-force Monte Carlo of scipy's t-tests (tests/analysis/test_sequential.py). The
equivalence tests (TOST) use the one-sided analogue. The p's are repeated p-values — P₀(max_k S_k ≥ the
look's S), valid at a data-dependent stop — so Holm over a family of contrasts still applies
(:func:`analysis.stats.decide_family`): the verdicts at the look where the sweep stops decide wrongly anywhere
in the family with probability ≤ α (normal per-seed values).

**The printed interval: 95% at the stop.** The interval printed at a look (``low``/``high``) is the t-interval
est ± t(1 − γ/2; df)·se with γ = max(:data:`PRINT_ALPHA`, α′_K) = 0.04 (96%) at every look. Why not the
repeated confidence interval (RCI, the boundary's nominal level at each look)? An RCI covers the truth at all
looks at once with 1 − α, so at the stop it covers ≥ 95% — but far more in practice: the former Pocock RCIs
covered 0.98–0.99 at the cap, where a sweep of many contrasts usually ends, above the 0.93–0.97 an interval
read as 95% must keep. A plain 95% t-interval at the stop under-covers (below 0.93 under Pocock stopping: a
look stops when its estimate happens to be extreme). The O'Brien–Fleming shape makes the stop select little —
early looks stop only for effects far outside the interval — and 96% is the level at which the interval at
the stop covers 0.95–0.96 under normal per-seed values (0.946–0.964 over true differences 0–4 margins, sd of a
seed's difference 0.5–4 margins; a contrast stopped by its own verdict, held to the cap by another, or in a
compare-like sweep of six contrasts; batch 2 → cap 10 and 3 → 12). γ ≥ α′_K ≥ α′_k keeps it inside every
look's two-sided RCI, so a contrast decided better / worse always prints an interval that excludes 0. Its
coverage is *simulated*, not guaranteed for an arbitrary stopping rule (the RCI's is): with per-seed values t₃
or skewed (a skew-normal/lognormal mix) it stays within 0.93–0.97; a per-seed difference skewed by 1.6 or
more falls to 0.92 at low power (docs/comparing.md has the table; ``python -m tests.analysis.test_sequential``
re-makes it).

The boundary assumes paired differences (the sequential sweep runs every arm at the same seeds); an unpaired
(Welch) contrast uses the same boundary at n = the smaller side with its own degrees of freedom.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats as _st

from analysis import stats as S

#: Null studies in the Monte Carlo of :func:`boundary` (C_α within ~0.005 of the exact constant).
N_SIM = 100_000

#: The printed interval's level is 1 − max(PRINT_ALPHA, α′_K) at every look (see the module notes).
PRINT_ALPHA = 0.04

#: Wang–Tsiatis Δ of each boundary shape: 0 = O'Brien–Fleming, 1/2 = Pocock.
SHAPES = {"obf": 0.0, "pocock": 0.5}


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
    """The null distribution of max_k S_k over the planned looks, from :func:`boundary`.

    ``max_two`` / ``max_one``: sorted samples (N_SIM,) of max over the looks of S_k = W_k·(n_k/n_K)^(1/2 − Δ),
    W_k the normal equivalent of the two-sided / one-sided (upper) t-test p of the cumulative seeds."""

    looks: tuple[int, ...]
    shape: str
    max_two: np.ndarray
    max_one: np.ndarray

    def weight(self, n: float) -> float:
        """(n/n_K)^(1/2 − Δ): the scale of look n's statistic (n clipped to [1, n_K]; a look off the plan, e.g.
        a failed run, is placed by its own n)."""
        frac = min(max(float(n), 1.0), float(self.looks[-1])) / self.looks[-1]
        return frac ** (0.5 - SHAPES[self.shape])

    def constant(self, alpha: float, *, two_sided: bool = True) -> float:
        """C_α: P₀(max_k S_k ≥ C_α) = α."""
        samples = self.max_two if two_sided else self.max_one
        return float(np.quantile(samples, 1 - alpha, method="inverted_cdf"))

    def nominal(self, alpha: float, n: Optional[float] = None, *, two_sided: bool = True) -> float:
        """α′ at the look with ``n`` seeds (default: the last): the nominal p below which that look rejects."""
        w = self.weight(self.looks[-1] if n is None else n)
        c = self.constant(alpha, two_sided=two_sided) / w
        return float(2 * _st.norm.sf(c) if two_sided else _st.norm.sf(c))

    def repeated_p(self, nominal_p: float, n: Optional[float] = None, *, two_sided: bool = True) -> float:
        """The repeated p-value of a look with ``n`` seeds whose nominal p is ``nominal_p``: P₀(max_k S_k ≥ its
        S); ≤ α exactly when the look crosses the α-level boundary."""
        if not math.isfinite(nominal_p):
            return math.nan
        w = self.weight(self.looks[-1] if n is None else n)
        z = _st.norm.isf(nominal_p / 2 if two_sided else nominal_p) * w
        samples = self.max_two if two_sided else self.max_one
        return float((len(samples) - np.searchsorted(samples, z, side="left")) / len(samples))

    def print_alpha(self, alpha: float = 0.05) -> float:
        """γ of the printed interval: max(PRINT_ALPHA, α′_K), never narrower-than-decided (module notes)."""
        return max(PRINT_ALPHA, self.nominal(alpha))

    def describe(self, alpha: float = 0.05) -> str:
        """One line for records: the shape, the nominal levels at the looks and the printed interval's level."""
        name = {"obf": "O'Brien-Fleming-type", "pocock": "Pocock-type"}[self.shape]
        levels = ", ".join(f"{n}: {self.nominal(alpha, n):.4f}" for n in self.looks)
        return (f"{name} group-sequential boundary on the looks' t-tests (family-wise alpha {alpha:g} over the looks; "
                f"constant by Monte Carlo of t statistics, analysis.sequential); nominal two-sided level per look "
                f"{{{levels}}}; printed interval: {100 * (1 - self.print_alpha(alpha)):.0f}% t-interval at every look")


@functools.lru_cache(maxsize=32)
def _boundary(looks: tuple[int, ...], shape: str, n_sim: int, seed: int) -> Boundary:
    lk = np.asarray(looks)
    x = np.random.default_rng(seed).standard_normal((n_sim, int(lk[-1])))
    c1, c2 = np.cumsum(x, axis=1)[:, lk - 1], np.cumsum(x * x, axis=1)[:, lk - 1]
    mean = c1 / lk
    t = mean / np.sqrt((c2 - lk * mean ** 2) / (lk - 1) / lk)
    df = lk - 1
    w = (lk / lk[-1]) ** (0.5 - SHAPES[shape])
    two = (_st.norm.isf(_st.t.sf(np.abs(t), df)) * w).max(axis=1)
    one = (_st.norm.isf(_st.t.sf(t, df)) * w).max(axis=1)
    return Boundary(looks, shape, np.sort(two), np.sort(one))


def boundary(looks: Sequence[int], *, shape: str = "obf", n_sim: int = N_SIM, seed: int = 0) -> Boundary:
    """Monte Carlo of ``n_sim`` null studies of normal per-seed values (``default_rng(seed)``: deterministic,
    cached): at each look n_k the t statistic of the first n_k values, its nominal p with n_k − 1 degrees of
    freedom, W_k = Φ⁻¹(1 − p/2) (two-sided) or Φ⁻¹(1 − p) (one-sided, upper) scaled by (n_k/n_K)^(1/2 − Δ);
    per study the largest over the looks. ``shape``: ``"obf"`` (Δ = 0) or ``"pocock"`` (Δ = 1/2)."""
    lk = tuple(sorted(set(int(n) for n in looks)))
    if len(lk) == 0 or lk[0] < 2:
        raise ValueError(f"looks must be seed counts >= 2, got {list(looks)}")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return _boundary(lk, shape, int(n_sim), int(seed))


def decide(a: Iterable[float], b: Optional[Iterable[float]] = None, *, bound: Boundary, margin: float,
           paired: bool = True, higher_is_better: bool = True, alpha: float = 0.05,
           reference: Optional[float] = None) -> S.Decision:
    """:func:`analysis.stats.decide` at one look of a sequential study: ``p`` and ``p_equiv`` are the repeated
    p-values of ``bound`` at this look's n (the verdict words follow the same rules); ``low``/``high`` the
    printed interval (level 1 − ``bound.print_alpha(alpha)``, the module notes); ``low_eq``/``high_eq`` the
    repeated interval the equivalence test uses here (one-sided α′ of the look on each side)."""
    d = S.decide(a, b, margin=margin, paired=paired, higher_is_better=higher_is_better, alpha=alpha,
                 reference=reference)
    if not (math.isfinite(d.se) and d.se > 0):
        return d
    a1 = bound.nominal(alpha, d.n, two_sided=False)
    q, q_eq = float(_st.t.ppf(1 - bound.print_alpha(alpha) / 2, d.df)), float(_st.t.ppf(1 - a1, d.df))
    delta = d.estimate - d.reference
    p = bound.repeated_p(float(2 * _st.t.sf(abs(delta) / d.se, d.df)), d.n)
    p_eq = max(bound.repeated_p(float(_st.t.sf((delta + margin) / d.se, d.df)), d.n, two_sided=False),
               bound.repeated_p(float(_st.t.cdf((delta - margin) / d.se, d.df)), d.n, two_sided=False))
    word = S.decision_word(delta, p, p_eq, alpha=alpha, higher_is_better=higher_is_better, n=d.n, se=d.se)
    return S.Decision(d.estimate, d.estimate - q * d.se, d.estimate + q * d.se, d.estimate - q_eq * d.se,
                      d.estimate + q_eq * d.se, d.n, d.paired, d.margin, p, p_eq, p, p_eq, word, d.low_n,
                      d.sd, d.df, d.se, alpha, higher_is_better, d.reference, d.n_needed)


def undecided(verdicts: Iterable[str]) -> list[int]:
    """Indices of the contrasts (by their verdicts) a sequential sweep still has to add seeds for: neither
    equivalent, better nor worse (a descriptive one, with fewer than 2 seeds, too)."""
    return [i for i, v in enumerate(verdicts) if v in ("undetermined", "descriptive")]
