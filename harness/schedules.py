"""Schedules stated once, for the method that follows them and the analysis that checks them (pure Python)."""

from __future__ import annotations


def budget_formula(step: int, *, b0: int, bT: int, total: int, tinit: int, tfinal: int) -> int:
    """The global budget b(t) of PAPERS.md (Zhang et al. 2023) in the code form: b0 until t_i, then a cubic
    decay to bT, reached at T − t_f; integer-truncated as the paper's code and PEFT do. ``step`` counts
    optimizer steps from 1."""
    if step <= tinit:
        return b0
    if step > total - tfinal:
        return bT
    frac = 1 - (step - tinit) / (total - tinit - tfinal)
    return int((b0 - bT) * frac**3 + bT)
