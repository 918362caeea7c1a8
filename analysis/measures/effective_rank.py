"""Effective rank at an energy fraction (Biderman et al., "LoRA Learns Less and Forgets Less", 2024) and stable
rank of ΔW, from its singular values. The energy of a spectrum is Σ σ_i²."""

from __future__ import annotations

import torch
from torch import Tensor

#: the energy fraction of Biderman et al. (the rank explaining 90% of the spectrum's energy)
ENERGY = 0.9


def cumulative_energy(s: Tensor) -> Tensor:
    """Σ_{i≤k} σ_i² / Σ σ_i² for k = 1..n; s: (G, n) descending -> (G, n) (0 where ΔW = 0)."""
    e = (s * s).cumsum(-1)
    total = e[..., -1:]
    return torch.where(total > 0, e / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(e))


def effective_rank(s: Tensor, *, energy: float = ENERGY) -> Tensor:
    """Smallest k with Σ_{i≤k} σ_i² ≥ energy · Σ σ_i²; s: (G, n) descending -> (G,) int64 (0 where ΔW = 0)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    e = s * s
    total = e.sum(-1, keepdim=True)
    k = (e.cumsum(-1) < energy * total).sum(-1) + 1
    return torch.where(total.squeeze(-1) > 0, k, torch.zeros_like(k))


def stable_rank(s: Tensor) -> Tensor:
    """‖ΔW‖²_F / ‖ΔW‖²_2 = Σ σ_i² / σ_1²; s: (G, n) descending -> (G,) (0 where ΔW = 0)."""
    top = s[..., 0] ** 2
    return torch.where(top > 0, (s * s).sum(-1) / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(top))
