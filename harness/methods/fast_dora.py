"""A faster forward for PEFT's DoRA Linear layers, computing the same quantity as PEFT's.

PEFT's ``DoraLinearLayer.forward`` builds the d_out×d_in matrix W0 + s·B A at every step (through
``lora_B(lora_A(eye(d_in)))``) only to take its row norms, then makes about six elementwise passes over the
(tokens × d_out) output. :class:`FusedDoraLinearLayer` takes the row norms from the factors instead,

    ||W0_i + s·(B A)_i||² = ||W0_i||² + 2s·Σ_j B_ij (W0 Aᵀ)_ij + s²·Σ_j (B A Aᵀ)_ij B_ij,

(||W0_i||² cached), folds g·s (g = m / norm) into B and −(g − 1)·bias into the LoRA matmul's bias, and
is left with two elementwise passes, (g − 1)·base + LoRA. :func:`install_fused_dora` swaps the class of
PEFT's instances in place, so parameters, state-dict keys, merging and saving stay PEFT's.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Optional

import torch
import torch.nn.functional as F
from peft.tuners.lora.dora import DoraLinearLayer
from torch import Tensor, nn


# The forward runs once per adapted matrix and step: on small models its host time is what counts, so
# casts and autocast contexts are entered only where they change something.


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, without the call when ``t`` has that dtype already."""
    return t if t.dtype == dtype else t.to(dtype)


def _autocast_off(device: torch.device) -> ContextManager[object]:
    """Autocast disabled on ``device`` (a no-op context when it is not enabled there)."""
    return torch.autocast(device.type, enabled=False) if torch.is_autocast_enabled(device.type) else nullcontext()


def _acc_dtype(t: Tensor) -> torch.dtype:
    """float32, or float64 for float64 input: the dtype the row norms are accumulated in."""
    return torch.promote_types(t.dtype, torch.float32)


@torch.no_grad()
def w0_row_sq(w0: Tensor) -> Tensor:
    """||W0_i||² per row. w0: (d_out, d_in), any float dtype → (d_out,) in :func:`_acc_dtype`."""
    return _cast(w0, _acc_dtype(w0)).square().sum(1)


@torch.no_grad()
def factored_row_norm(w0: Tensor, a: Tensor, b: Tensor, scaling: float, w0_sq: Tensor) -> Tensor:
    """||W0 + s·B A|| per row (detached), without forming the d_out×d_in sum; autocast off.

    w0: (d_out, d_in), a transposed view is fine; a: (r, d_in); b: (d_out, r); w0_sq: (d_out,) from
    :func:`w0_row_sq`. Returns (d_out,) in float32 (float64 for a float64 W0). A low-precision W0 is cast
    to float32 for the W0 Aᵀ product (a transient copy, as large as W0).
    """
    acc = w0_sq.dtype
    with _autocast_off(w0.device):
        a, b = _cast(a, acc), _cast(b, acc)
        # 2s·Σ_j B_ij ((W0 + s/2·B A) Aᵀ)_ij = 2s·Σ_j B_ij (W0 Aᵀ)_ij + s²·Σ_j (B A Aᵀ)_ij B_ij
        half = torch.addmm(_cast(w0, acc) @ a.T, b, a @ a.T, alpha=scaling / 2)  # (d_out, r)
        sq = torch.add(w0_sq, (b * half).sum(1), alpha=2 * scaling)
    return sq.clamp_min_(0).sqrt_()


def _plain_weight(base_layer: nn.Module) -> Optional[Tensor]:
    """The base layer's weight if it is a plain 2-D float tensor (not quantized, no tensor subclass)."""
    w = getattr(base_layer, "weight", None)
    if type(w) not in (nn.Parameter, Tensor) or hasattr(base_layer, "W_q"):
        return None
    return w if w.ndim == 2 and w.is_floating_point() else None


def _plain_linear(m: nn.Module) -> bool:
    """A bias-free ``nn.Linear`` (what PEFT's DoRA makes for lora_A / lora_B)."""
    return type(m) is nn.Linear and m.bias is None


def _dora_output(ax: Tensor, b: Tensor, g: Tensor, scaling: float, base: Tensor, bias: Optional[Tensor],
                 dtype: torch.dtype) -> Tensor:
    """(g − 1)·(base − bias) + g·s·B (A x) in two elementwise passes (PEFT: about six).

    ax: (..., r) = A x; b: (d_out, r); g: (d_out,) float32; base: (..., d_out); bias: (d_out,) or None;
    dtype: that of g in PEFT (g − 1 is cast to it, so the result has PEFT's dtype). g·s scales the rows of
    B and −(g − 1)·bias becomes the bias of the B matmul, to which (g − 1)·base is added. Not ``addcmul``:
    CUDA autocast would promote its bf16 inputs with two full-size fp32 copies, and its backward multiplies
    base by its scalar ``value`` in one more full-size pass.
    """
    b_scaled = _cast(b * (g * scaling).unsqueeze(1), b.dtype)
    b_bias = None if bias is None else _cast(torch.addcmul(bias, g, bias, value=-1), b.dtype)  # −(g − 1)·bias
    return (_cast(g - 1, dtype) * base).add_(F.linear(ax, b_scaled, b_bias))


class FusedDoraLinearLayer(DoraLinearLayer):
    """PEFT's ``DoraLinearLayer`` with a forward that never materialises W0 + s·B A (see the module doc).

    Falls back to PEFT's forward for a base weight that is not a plain float tensor (quantized, tensor
    subclasses) and for LoRA factors that are not bias-free ``nn.Linear``. ``fan_in_fan_out`` (weight stored
    as (d_in, d_out)) is supported. ||W0_i||² is cached on the module (not in the state dict), keyed on the
    weight's storage, version counter, dtype, shape and device: in-place writes to the weight or replacing it
    recompute it; writes through ``weight.data`` bypass the version counter and are not seen.
    """

    def forward(self, x: Tensor, *, lora_A: nn.Module, lora_B: nn.Module, scaling: float,
                base_layer: nn.Module, base_result: Optional[Tensor] = None,
                adapter_name: str = "default") -> Tensor:
        """DoRA's output on top of the base layer's, as PEFT's: (g − 1)·(base_result − bias) + g·s·B A x.

        x: (..., d_in), already dropped out; base_result: (..., d_out) the base layer's output with bias, or
        None (dropout active): then W0 x is recomputed from this x, without bias. g = m / ||W0 + s·B A||_row
        (d_out,) in float32, the norm detached; the result has PEFT's dtype (g's there: m's and x's promoted).
        """
        w = _plain_weight(base_layer)
        if w is None or not (_plain_linear(lora_A) and _plain_linear(lora_B)):
            return super().forward(x, lora_A=lora_A, lora_B=lora_B, scaling=scaling, base_layer=base_layer,
                                   base_result=base_result, adapter_name=adapter_name)
        w0 = w.T if self.fan_in_fan_out else w
        norm = factored_row_norm(w0, lora_A.weight, lora_B.weight, scaling, self._w0_row_sq(w0))
        g = self.weight / norm
        dtype = torch.promote_types(self.weight.dtype, x.dtype)
        if base_result is None:
            return _dora_output(lora_A(x), lora_B.weight, g, scaling, F.linear(x, _cast(w0, x.dtype)), None, dtype)
        return _dora_output(lora_A(x), lora_B.weight, g, scaling, base_result, base_layer.bias, dtype)

    def _w0_row_sq(self, w0: Tensor) -> Tensor:
        """:func:`w0_row_sq`, cached per (storage, version, dtype, shape, device) of W0; not under compile."""
        if torch.compiler.is_compiling():
            return w0_row_sq(w0)
        key = (w0.data_ptr(), w0._version, w0.dtype, tuple(w0.shape), w0.device)
        cached = getattr(self, "_w0_sq_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, w0_row_sq(w0))
            self._w0_sq_cache = cached
        return cached[1]


def install_fused_dora(model: nn.Module) -> int:
    """Swap the class of every PEFT ``DoraLinearLayer`` in ``model`` (that exact class: not the embedding
    or conv ones) to :class:`FusedDoraLinearLayer`. Parameters and state-dict keys are unchanged, so
    ``save_pretrained`` / ``PeftModel.from_pretrained`` work as before. Returns how many were swapped."""
    layers = [m for m in model.modules() if type(m) is DoraLinearLayer]
    for m in layers:
        m.__class__ = FusedDoraLinearLayer
    return len(layers)
