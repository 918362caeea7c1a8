"""Batched singular value decompositions for the measures: dense, and factored (ΔW = B A, rank ≤ q).

Everything takes stacks: (G, out, in) matrices, (G, out, q) / (G, q, in) factors. Singular values come in
descending order; singular vectors as columns (U (G, out, k), V (G, in, k)), torch's (out, in) layout.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class SVD(NamedTuple):
    """``u`` (G, out, k), ``s`` (G, k) descending, ``v`` (G, in, k): the thin SVD M = U diag(s) Vᵀ."""

    u: Tensor
    s: Tensor
    v: Tensor


def device_for(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; otherwise ``name`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def svd_dense(m: Tensor) -> SVD:
    """Thin SVD of each matrix of ``m`` (G, out, in): k = min(out, in)."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return SVD(u, s, vh.mT)


def svd_factored(b: Tensor, a: Tensor) -> SVD:
    """Thin SVD of ΔW = B A from its factors, B (G, out, q) and A (G, q, in), with q ≤ min(out, in), without
    forming ΔW: B = Q_b R_b, Aᵀ = Q_a R_a (reduced QR), then the q×q SVD R_b R_aᵀ = U_c diag(s) V_cᵀ gives
    U = Q_b U_c (G, out, q), V = Q_a V_c (G, in, q); ΔW's other singular values are 0. Costs O((out + in)·q²)."""
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.mT)
    uc, s, vch = torch.linalg.svd(rb @ ra.mT)
    return SVD(qb @ uc, s, qa @ vch.mT)


def numerical_rank(s: Tensor, shape: tuple[int, int], *, eps: float = torch.finfo(torch.float32).eps) -> Tensor:
    """Number of singular values above σ_1 · max(out, in) · eps (numpy's ``matrix_rank`` rule; ``eps`` of
    float32 by default, the precision the snapshots are stored in). s: (G, k) descending -> (G,) int64."""
    tol = s[..., :1] * max(shape) * eps
    return (s > tol).sum(-1)
