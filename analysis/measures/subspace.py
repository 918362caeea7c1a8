"""Subspace similarity (Hu et al., "LoRA", 2021, §7.2): φ(A, B, i, j) = ‖U_A,iᵀ U_B,j‖²_F / min(i, j), with
U_A,i the first i singular vectors of A (columns, descending singular values). 1 when one subspace contains
the other, 0 when they are orthogonal; a random pair of i- and j-dimensional subspaces of R^n gives about
max(i, j)/n."""

from __future__ import annotations

from torch import Tensor


def subspace_similarity(u_a: Tensor, u_b: Tensor, i: int, j: int) -> Tensor:
    """φ between the first ``i`` columns of ``u_a`` (G, n, ≥i) and the first ``j`` of ``u_b`` (G, n, ≥j) -> (G,).
    Both orthonormal (singular vectors)."""
    if i < 1 or j < 1 or i > u_a.shape[-1] or j > u_b.shape[-1]:
        raise ValueError(f"need 1 <= i <= {u_a.shape[-1]} and 1 <= j <= {u_b.shape[-1]}, got i={i}, j={j}")
    return (u_a[..., :i].mT @ u_b[..., :j]).square().sum((-2, -1)) / min(i, j)


def similarity_grid(u_a: Tensor, u_b: Tensor) -> Tensor:
    """φ(A, B, i, j) for every i ≤ I, j ≤ J (the LoRA paper's Figure 3): u_a (G, n, I), u_b (G, n, J) ->
    (G, I, J), entry [i-1, j-1] = φ(i, j)."""
    c = (u_a.mT @ u_b).square()  # (G, I, J)
    cum = c.cumsum(-2).cumsum(-1)
    i = cum.new_tensor(range(1, c.shape[-2] + 1)).unsqueeze(-1)
    j = cum.new_tensor(range(1, c.shape[-1] + 1)).unsqueeze(-2)
    return cum / (i.minimum(j))
