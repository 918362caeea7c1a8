"""Every measure against the numpy brute force of :mod:`tests.analysis.measures.brute` on random matrices, and the
low-rank SVD path against the dense one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.measures.alignment import w0_alignment
from analysis.measures.amplification import amplification
from analysis.measures.effective_rank import cumulative_energy, effective_rank, stable_rank
from analysis.measures.intruders import intruders
from analysis.measures.linalg import numerical_rank, svd_dense, svd_factored
from analysis.measures.subspace import similarity_grid, subspace_similarity
from tests.analysis.measures import brute

SHAPES = [(24, 24), (40, 16), (16, 40)]


def _low_rank(g: torch.Generator, out: int, inp: int, q: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.randn(n, out, q, generator=g, dtype=torch.float64)
    a = torch.randn(n, q, inp, generator=g, dtype=torch.float64)
    return b, a


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("q", [1, 4, 8])
def test_low_rank_path_equals_the_dense_svd(shape: tuple[int, int], q: int) -> None:
    b, a = _low_rank(torch.Generator().manual_seed(q), *shape, q)
    fast, dense = svd_factored(b, a), svd_dense(b @ a)
    assert torch.allclose(fast.s, dense.s[:, :q], rtol=1e-10, atol=1e-12)
    assert (dense.s[:, q:] < 1e-10 * dense.s[:, :1]).all()  # rank q: the rest is rounding
    # the same singular vectors up to sign, and they rebuild ΔW
    assert torch.allclose((fast.u.mT @ dense.u[..., :q]).abs().diagonal(dim1=-2, dim2=-1), torch.ones(3, q, dtype=b.dtype),
                          atol=1e-8)
    assert torch.allclose(fast.u @ torch.diag_embed(fast.s) @ fast.v.mT, b @ a, atol=1e-10)
    assert (numerical_rank(fast.s, shape) == q).all() and (numerical_rank(dense.s, shape) == q).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_intruders_equal_the_brute_force(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(6, *shape, generator=g, dtype=torch.float64)
    counts = []
    for scale in (0.0, 0.3, 1.0, 3.0, 10.0, 30.0):  # from no change to a ΔW that dominates W0
        b, a = _low_rank(g, *shape, 4, n=6)
        w = w0 + scale * b @ a / shape[0] ** 0.5
        got = intruders(w0, w).tolist()
        assert got == [brute.intruders(w0[i].numpy(), w[i].numpy()) for i in range(6)]
        counts += got
    assert min(counts) == 0 and max(counts) >= 3  # the cases span no intruders to several


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("q", [3, 0])  # q = 0: a dense ΔW
def test_ranks_amplification_alignment_equal_the_brute_force(shape: tuple[int, int], q: int) -> None:
    g = torch.Generator().manual_seed(7)
    w0 = torch.randn(4, *shape, generator=g, dtype=torch.float64)
    if q:
        b, a = _low_rank(g, *shape, q, n=4)
        delta = b @ a
    else:
        delta = torch.randn(4, *shape, generator=g, dtype=torch.float64) * torch.logspace(0, -3, shape[1], dtype=torch.float64)
    d, d0 = svd_dense(delta), svd_dense(w0)
    r = min(5, q or 5)
    fro = delta.norm(dim=(-2, -1))
    amp = amplification(w0, d.u[..., :r], d.v[..., :r], fro)
    for energy in (0.5, 0.9, 0.99):
        assert effective_rank(d.s, energy=energy).tolist() == [brute.effective_rank(m.numpy(), energy) for m in delta]
    stable = stable_rank(d.s)
    align = w0_alignment(d0.u, d0.v, 6, delta=delta)
    for i in range(4):
        m, m0 = delta[i].numpy(), w0[i].numpy()
        assert stable[i].item() == pytest.approx(brute.stable_rank(m), rel=1e-5)
        assert amp[i].item() == pytest.approx(brute.amplification(m0, m, r), rel=1e-5)
        assert align[i].item() == pytest.approx(brute.alignment(m0, m, 6), rel=1e-5)
    if q:  # the factored alignment forms nothing of size out×in and equals the dense one
        assert torch.allclose(w0_alignment(d0.u, d0.v, 6, factors=(b, a)), align, rtol=1e-10)
    e = cumulative_energy(d.s)
    assert torch.allclose(e[:, -1], torch.ones(4, dtype=e.dtype)) and (e.diff(dim=-1) >= -1e-15).all()


def test_zero_delta_gives_zero_ranks_and_no_alignment() -> None:
    s = torch.zeros(2, 5, dtype=torch.float64)
    assert effective_rank(s).tolist() == [0, 0] and stable_rank(s).tolist() == [0.0, 0.0]
    u0 = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    assert torch.isnan(w0_alignment(u0, u0, 2, delta=torch.zeros(2, 5, 5, dtype=torch.float64))).all()
    with pytest.raises(ValueError, match="energy"):
        effective_rank(s, energy=0.0)


@pytest.mark.parametrize("i, j", [(1, 1), (3, 7), (8, 2), (8, 8)])
def test_subspace_similarity_equals_the_brute_force(i: int, j: int) -> None:
    g = torch.Generator().manual_seed(i * 10 + j)
    a = torch.randn(3, 30, 12, generator=g, dtype=torch.float64)
    b = a + 0.7 * torch.randn(3, 30, 12, generator=g, dtype=torch.float64)  # related: φ well inside (0, 1)
    ua, ub = svd_dense(a).u, svd_dense(b).u
    got = subspace_similarity(ua, ub, i, j)
    ref = [brute.phi(a[k].numpy(), b[k].numpy(), i, j) for k in range(3)]
    assert got.tolist() == pytest.approx(ref, rel=1e-5)
    assert similarity_grid(ua[..., :8], ub[..., :8])[:, i - 1, j - 1].tolist() == pytest.approx(ref, rel=1e-5)
    assert subspace_similarity(ua, ua, i, i).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="need 1 <= i"):
        subspace_similarity(ua, ub, 0, j)
