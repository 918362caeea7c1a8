"""Length buckets: a few padded lengths that every training batch is padded up to, so a compiled or
CUDA-graphed step sees a bounded number of shapes.

A batch of ``B`` examples drawn from the training set is padded to its longest example, ``M``. With the
examples' lengths ℓ drawn from the empirical distribution F, ``P(M ≤ x) = F(x)^B`` (draws with replacement;
the loop draws without, which differs by O(B/n)). Bucketing pads ``M`` up to the smallest edge ≥ M, so the
expected padded length is ``Σ_k e_k · (F(e_k)^B − F(e_{k−1})^B)``; :func:`length_buckets` picks the K edges
(multiples of ``align``, the last one covering the longest example) that minimise it, exactly, by dynamic
programming over the candidate edges (O(K·C²), C ≤ max_length / align).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _candidates(lengths: np.ndarray, align: int) -> np.ndarray:
    """Every aligned length some example rounds up to, ascending."""
    return np.unique(-(-lengths // align) * align)


def _max_cdf(lengths: np.ndarray, edges: np.ndarray, batch_size: int) -> np.ndarray:
    """P(batch max ≤ e) for each edge e: F(e)^B, F the empirical CDF of ``lengths``."""
    f = np.searchsorted(np.sort(lengths), edges, side="right") / len(lengths)
    return f.astype(np.float64) ** batch_size


def expected_padded_length(lengths: Sequence[int], batch_size: int, edges: Sequence[int] = ()) -> float:
    """Expected length a batch of ``batch_size`` is padded to: up to the smallest of ``edges`` ≥ its longest
    example, or (no edges) to the longest example itself."""
    ell = np.asarray(lengths, dtype=np.int64)
    e = np.asarray(sorted(edges) if len(edges) else np.unique(ell), dtype=np.int64)
    if e[-1] < ell.max():
        raise ValueError(f"the largest edge {e[-1]} is shorter than the longest example ({ell.max()})")
    cdf = _max_cdf(ell, e, batch_size)
    return float(np.sum(e * np.diff(cdf, prepend=0.0)))


def length_buckets(lengths: Sequence[int], batch_size: int, k: int, align: int = 8) -> tuple[int, ...]:
    """The ``k`` (or fewer, when fewer aligned lengths occur) padded lengths that minimise the expected padded
    length of a batch of ``batch_size`` examples drawn from ``lengths``; ascending, multiples of ``align``, the
    last ≥ the longest example."""
    if k < 1 or align < 1 or batch_size < 1:
        raise ValueError(f"k, align and batch_size must be >= 1, got {k}, {align}, {batch_size}")
    ell = np.asarray(lengths, dtype=np.int64)
    cand = _candidates(ell, align)
    c = len(cand)
    if c <= k:
        return tuple(int(x) for x in cand)
    cdf = _max_cdf(ell, cand, batch_size)
    # cost[i][j]: the expected padded length mass of maxima in (cand[i-1], cand[j]] padded to cand[j] (i ≤ j);
    # best[m][j]: the least cost of covering everything up to cand[j] with m edges, the last one cand[j]
    inf = float("inf")
    best = np.full((k + 1, c), inf)
    back = np.zeros((k + 1, c), dtype=np.int64)
    for j in range(c):
        best[1, j] = cand[j] * cdf[j]
    for m in range(2, k + 1):
        for j in range(m - 1, c):
            # the previous edge is cand[i] (i < j): maxima in (cand[i], cand[j]] pad to cand[j]
            i = np.arange(m - 2, j)
            cost = best[m - 1, i] + cand[j] * (cdf[j] - cdf[i])
            t = int(np.argmin(cost))
            best[m, j], back[m, j] = cost[t], i[t]
    edges = [c - 1]
    for m in range(k, 1, -1):
        edges.append(int(back[m, edges[-1]]))
    return tuple(int(cand[i]) for i in reversed(edges))


def pad_length(longest: int, edges: Sequence[int], align: int = 8) -> int:
    """The length a batch whose longest example is ``longest`` is padded to: the smallest edge ≥ it, or (longer
    than every edge: an evaluation example the training set has no peer for) ``longest`` rounded up to ``align``."""
    for e in edges:
        if e >= longest:
            return int(e)
    return -(-longest // align) * align
