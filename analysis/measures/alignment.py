"""Alignment of ΔW with W0's spectrum: the share of ΔW's energy inside W0's top-r singular subspace,
‖U0_rᵀ ΔW V0_r‖²_F / ‖ΔW‖²_F ∈ [0, 1] (U0_r, V0_r: W0's top-r left and right singular vectors). PiSSA adapts
that subspace on purpose; a ΔW with no preference gets about r²/(out·in)."""

from __future__ import annotations

import torch
from torch import Tensor


def w0_alignment(u0: Tensor, v0: Tensor, r: int, *, delta: Tensor | None = None,
                 factors: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Energy share of ΔW in W0's top-r subspace -> (G,) (NaN where ΔW = 0). W0's singular vectors u0 (G, out, ≥r),
    v0 (G, in, ≥r); ΔW either dense ``delta`` (G, out, in) or ``factors`` (B (G, out, q), A (G, q, in)), ΔW = B A
    (then nothing of size out×in is formed)."""
    if (delta is None) == (factors is None):
        raise ValueError("give ΔW either dense (delta=) or factored (factors=(B, A))")
    u, v = u0[..., :r], v0[..., :r]
    if delta is not None:
        inside, total = u.mT @ delta @ v, delta.square().sum((-2, -1))
    else:
        b, a = factors
        inside = (u.mT @ b) @ (a @ v)
        total = (b.mT @ b * (a @ a.mT)).sum((-2, -1))  # ‖BA‖²_F = tr(BᵀB AAᵀ)
    share = inside.square().sum((-2, -1)) / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))
