"""Amplification factor (Hu et al., "LoRA", 2021, §7.3): ‖ΔW‖_F / ‖Uᵀ W0 V‖_F, with U, V the top-r left and
right singular vectors of ΔW: how much ΔW amplifies the directions it shares with W0 (large: ΔW boosts
directions W0 barely uses)."""

from __future__ import annotations

from torch import Tensor


def amplification(w0: Tensor, u: Tensor, v: Tensor, dw_fro: Tensor) -> Tensor:
    """w0 (G, out, in); ΔW's top-r singular vectors u (G, out, r), v (G, in, r) (zero columns allowed: they add
    nothing, so a stack may mix ranks); ‖ΔW‖_F ``dw_fro`` (G,) -> (G,) (NaN where both norms are 0). r must not
    exceed ΔW's rank (beyond it singular vectors are arbitrary)."""
    return dw_fro / (u.mT @ w0 @ v).norm(dim=(-2, -1))
