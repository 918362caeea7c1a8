"""Length buckets (harness/buckets.py) against brute force: the expected padded length by simulation, the
chosen edges by trying every set of edges."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.buckets import expected_padded_length, length_buckets, pad_length


def skewed_lengths(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Token counts shaped like GLUE sentences: many short, a long tail."""
    return np.minimum(np.random.default_rng(seed).lognormal(3.0, 0.6, n).astype(int) + 4, 128)


def test_expected_padded_length_matches_simulated_batches() -> None:
    lengths = skewed_lengths()
    rng = np.random.default_rng(1)
    edges = (24, 40, 64, 136)
    sims = np.array([lengths[rng.choice(len(lengths), 16, replace=True)].max() for _ in range(20000)])
    padded = np.array([pad_length(int(m), edges) for m in sims])
    assert expected_padded_length(lengths, 16, edges) == pytest.approx(padded.mean(), rel=0.01)
    assert expected_padded_length(lengths, 16) == pytest.approx(sims.mean(), rel=0.01)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_buckets_are_the_best_edges_brute_force(k: int) -> None:
    lengths = skewed_lengths(500, seed=k)
    edges = length_buckets(lengths, 8, k, align=8)
    top = -(-lengths.max() // 8) * 8
    assert len(edges) == k and edges[-1] == top and list(edges) == sorted(set(edges))
    assert all(e % 8 == 0 for e in edges)
    cands = sorted({int(-(-x // 8) * 8) for x in lengths} - {top})
    best = min(expected_padded_length(lengths, 8, (*c, top)) for c in itertools.combinations(cands, k - 1))
    assert expected_padded_length(lengths, 8, edges) == pytest.approx(best, rel=1e-12)


def test_buckets_cut_padding_and_bound_shapes() -> None:
    lengths = skewed_lengths()
    longest = expected_padded_length(lengths, 32)
    one = expected_padded_length(lengths, 32, length_buckets(lengths, 32, 1))
    eight = expected_padded_length(lengths, 32, length_buckets(lengths, 32, 8))
    assert one > eight >= longest  # more buckets: less padding, never less than padding to the longest
    assert length_buckets([5, 6, 7], 4, 8) == (8,)  # fewer aligned lengths than buckets: those lengths


def test_pad_length() -> None:
    assert pad_length(17, (16, 32, 64)) == 32 and pad_length(16, (16, 32)) == 16
    assert pad_length(70, (16, 32, 64)) == 72  # longer than every edge (an eval example): aligned
    with pytest.raises(ValueError):
        length_buckets([4], 4, 0)
