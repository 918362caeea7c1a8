"""Intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence", 2024).

A singular vector of the fine-tuned weight W among its ``top_k`` largest is an *intruder* when its largest
absolute cosine with any singular vector of the pretrained W0 is below ``epsilon``. The defaults and the
rule are PEFT's (``peft.tuners.lora.intruders.reduce_intruder_dimension``: left singular vectors,
``top_k=10``, ``threshold_epsilon=0.5``, every singular vector of W0 compared).
"""

from __future__ import annotations

import torch
from torch import Tensor

from analysis.measures.linalg import svd_dense

#: PEFT's defaults (``reduce_intruder_dimension(top_k=10, threshold_epsilon=0.5)``)
TOP_K = 10
EPSILON = 0.5


def max_cosines(u_w: Tensor, u_w0: Tensor) -> Tensor:
    """For each column of ``u_w`` (G, out, k) the largest |cos| with any column of ``u_w0`` (G, out, n) ->
    (G, k). Columns are unit vectors (singular vectors), so the cosine is the dot product."""
    return (u_w.mT @ u_w0).abs().amax(dim=-1)


def intruder_count(u_w: Tensor, u_w0: Tensor, *, top_k: int = TOP_K, epsilon: float = EPSILON) -> Tensor:
    """Number of intruders among the first ``top_k`` columns of ``u_w`` (G, out, ≥top_k), the left singular
    vectors of W by descending singular value, against all left singular vectors ``u_w0`` (G, out, n) of W0
    -> (G,) int64."""
    return (max_cosines(u_w[..., :top_k], u_w0) < epsilon).sum(-1)


def intruders(w0: Tensor, w: Tensor, *, top_k: int = TOP_K, epsilon: float = EPSILON) -> Tensor:
    """Intruder count of each fine-tuned W (G, out, in) against its W0 (G, out, in) -> (G,) int64."""
    return intruder_count(svd_dense(w).u, svd_dense(w0).u, top_k=top_k, epsilon=epsilon)
