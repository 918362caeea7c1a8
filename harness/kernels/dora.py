"""A faster DoRA Linear for PEFT's layers, computing the same quantity as PEFT's.

PEFT's DoRA forward builds the d_out×d_in matrix W0 + s·B A at every step (through ``lora_B(lora_A(eye))``)
only to take its row norms, makes about six elementwise passes over the (tokens × d_out) output in float32
(the magnitude's dtype), and keeps W0 x alive for the magnitude's gradient. Here:

* the row norms come from the factors (||W0_i||² cached):
  ||W0_i + s·(B A)_i||² = ||W0_i||² + 2s·Σ_j B_ij (W0 Aᵀ)_ij + s²·Σ_j (B A Aᵀ)_ij B_ij;
* the layer output y = g ⊙ (W0 x + s·B A x) + b (g = m / norm, the norm detached as in the paper and PEFT)
  is one elementwise pass over the base output plus a matmul accumulated into it, in the compute dtype;
* the backward keeps nothing of size tokens × d_out: the magnitude's gradient
  ∂L/∂g_i = Σ_t gy_ti (W0 x_t)_i + s·Σ_t gy_ti (B A x_t)_i is taken as rowdot(W0, gyᵀ x) + s·rowdot(B, gyᵀ A x),
  one d_out×d_in matmul (the cost of a full fine-tuning weight gradient) instead of a stored activation;
  ``keep_base_output`` keeps W0 x instead (PEFT's memory, no extra matmul).

With dropout active PEFT's formula is y = W0 x + b + (g − 1)·W0 x̃ + g·s·B A x̃ (x̃ the dropped input); the
same function covers it with one more matmul each way, as PEFT's. :func:`install_fused_dora` swaps the classes
of PEFT's ``DoraLinearLayer`` and ``DoraLinearVariant`` instances in place, so parameters, state-dict keys,
merging and saving stay PEFT's; layers it cannot handle (quantized or tensor-subclass weights, LoRA factors
that are not bias-free ``nn.Linear``) take PEFT's forward.
"""

from __future__ import annotations

from contextlib import nullcontext
from collections.abc import Set as AbstractSet
from typing import Any, ContextManager, Optional, Union

import torch
from peft.tuners.lora.dora import DoraLinearLayer
from peft.tuners.lora.variants import DoraLinearVariant
from torch import Tensor, nn


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


def accumulate_mm(out: Tensor, a: Tensor, b: Tensor, *, owned: bool) -> Tensor:
    """out + a @ b. out: (T, n); a: (T, k); b: (k, n).

    Compiled: a matmul and an add, which inductor fuses into the elementwise pass that made ``out`` or into the
    one that consumes the sum (an in-place op there becomes a copy of ``out``; ``addmm`` copies ``out`` and makes
    a second pass over it). Eager: ``addmm``, in place when ``owned`` (``out`` is a fresh tensor not tracked by
    autograd: no copy); an in-place op on a tracked view would cost copies in the backward."""
    if torch.compiler.is_compiling():
        return out + a @ b
    return out.addmm_(a, b) if owned else torch.addmm(out, a, b)


def _w0_at(w0: Tensor, a: Tensor) -> Tensor:
    """W0 Aᵀ in float32. w0: (d_out, d_in) in any float dtype; a: (r, d_in) float32 → (d_out, r).

    A bfloat16 W0 on CUDA is not copied to float32: A is split into three bfloat16 terms (hi + mid + lo carry
    its 24-bit mantissa) and one bf16 matmul with a float32 output, W0 read once, gives the product within
    float32 accumulation error (on an H200, 2048×1024 by 16: 1.0e-6 relative to the float64 product, the float32
    matmul 2.1e-7, A rounded to bf16 ~1e-3); elsewhere W0 is cast to float32 (a transient copy as large as W0).
    """
    if w0.dtype != torch.bfloat16 or w0.device.type != "cuda" or a.dtype != torch.float32:
        return _cast(w0, a.dtype) @ a.T
    hi = a.to(torch.bfloat16)
    rest = a - hi.float()
    mid = rest.to(torch.bfloat16)
    lo = (rest - mid.float()).to(torch.bfloat16)
    r = a.shape[0]
    p = torch.mm(w0, torch.cat([hi, mid, lo]).T, out_dtype=torch.float32)  # (d_out, 3r)
    return p[:, :r] + p[:, r : 2 * r] + p[:, 2 * r :]


@torch.no_grad()
def factored_row_norm(w0: Tensor, a: Tensor, b: Tensor, scaling: float, w0_sq: Tensor) -> Tensor:
    """||W0 + s·B A|| per row (detached), without forming the d_out×d_in sum; autocast off.

    w0: (d_out, d_in), a transposed view is fine; a: (r, d_in); b: (d_out, r); w0_sq: (d_out,) from
    :func:`w0_row_sq`. Returns (d_out,) in float32 (float64 for a float64 W0). The W0 Aᵀ product is taken to
    float32 accuracy (:func:`_w0_at`; with A rounded to bf16 the norm would be off by ~3e-4).
    """
    acc = w0_sq.dtype
    with _autocast_off(w0.device):
        a, b = _cast(a, acc), _cast(b, acc)
        # 2s·Σ_j B_ij ((W0 + s/2·B A) Aᵀ)_ij = 2s·Σ_j B_ij (W0 Aᵀ)_ij + s²·Σ_j (B A Aᵀ)_ij B_ij
        half = torch.addmm(_w0_at(w0, a), b, a @ a.T, alpha=scaling / 2)  # (d_out, r)
        sq = torch.add(w0_sq, (b * half).sum(1), alpha=2 * scaling)
    return sq.clamp_min_(0).sqrt_()


class _DoraLinear(torch.autograd.Function):
    """y = result + (g − 1)·(W0 x̃) + g·s·B A x̃ with g = m / norm (norm a constant), where ``result`` = W0 x + b
    is the base layer's output. Without dropout (x̃ = x, ``dropped`` false) this is g·result + (1 − g)·b + g·s·B A x
    and W0 x̃ is not recomputed. ``keep_base``: keep W0 x̃ (tokens × d_out) for the magnitude's gradient instead
    of the gyᵀ x̃ matmul in the backward (PEFT's memory, less compute). Shapes: result (..., d_out); x̃ (..., d_in);
    w0 (d_out, d_in); bias (d_out,) or None; a (r, d_in); b (d_out, r); m, norm (d_out,). Computes in
    ``result``'s dtype, autocast off; the gradients come back in each input's dtype."""

    @staticmethod
    def forward(ctx: Any, result: Tensor, xd: Tensor, w0: Tensor, bias: Optional[Tensor], a: Tensor, b: Tensor,
                m: Tensor, norm: Tensor, scaling: float, dropped: bool, keep_base: bool) -> Tensor:
        cd = result.dtype
        d_out = result.shape[-1]
        base = None  # W0 x̃ (T, d_out), kept for the backward with ``keep_base``
        with _autocast_off(result.device):
            g = m.to(norm.dtype) / norm  # (d_out,), float32 (float64)
            gs = g * scaling
            x2 = _cast(xd, cd).reshape(-1, xd.shape[-1])
            ac = _cast(a, cd)  # (r, d_in)
            h = x2 @ ac.T  # (T, r)
            bgs = _cast(b.to(g.dtype) * gs.unsqueeze(1), cd)  # (d_out, r)
            if dropped and keep_base:
                base = x2 @ _cast(w0, cd).T
                out = torch.addcmul(result.reshape(-1, d_out), base, _cast(g - 1, cd))
            elif dropped:
                out = torch.addmm(result.reshape(-1, d_out), x2, _w0_scaled(w0, g - 1, cd).T)
            elif bias is None:
                out = (result * _cast(g, cd)).reshape(-1, d_out)
            else:
                out = torch.addcmul(_cast((1 - g) * bias, cd), result, _cast(g, cd)).reshape(-1, d_out)
            if keep_base and not dropped:
                base = result.reshape(-1, d_out) if bias is None else result.reshape(-1, d_out) - _cast(bias, cd)
            out = accumulate_mm(out, h, bgs.T, owned=True)  # a fresh tensor; autograd is off in here
        ctx.save_for_backward(x2, h, w0, ac, b, g, gs, norm, bgs, base)
        ctx.scaling, ctx.dropped, ctx.dtypes = scaling, dropped, (xd.dtype, a.dtype, m.dtype)
        return out.view(result.shape)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Optional[Tensor], ...]:
        x2, h, w0, ac, b, g, gs, norm, bgs, base = ctx.saved_tensors
        cd = x2.dtype
        x_dtype, a_dtype, m_dtype = ctx.dtypes
        need = ctx.needs_input_grad
        grads: list[Optional[Tensor]] = [None] * 11
        with _autocast_off(gy.device):
            gy2 = _cast(gy, cd).reshape(-1, gy.shape[-1])  # (T, d_out)
            if need[0]:
                grads[0] = gy if ctx.dropped else (gy * _cast(g, gy.dtype))
            if need[3] and not ctx.dropped:  # with dropout the bias only reaches y through ``result``
                grads[3] = gy2.to(g.dtype).sum(0) * (1 - g)
            t = gy2 @ bgs  # (T, r): ∂L/∂(A x̃)
            if need[1]:
                gx = t @ ac
                if ctx.dropped:
                    gx.addmm_(gy2, _w0_scaled(w0, g - 1, cd))
                grads[1] = _cast(gx.view(*gy.shape[:-1], -1), x_dtype)
            if need[4]:
                grads[4] = _cast(t.T @ x2, a_dtype)
            p = (gy2.T @ h).to(g.dtype)  # (d_out, r)
            if need[5]:
                grads[5] = _cast(p * gs.unsqueeze(1), b.dtype)
            if need[6]:
                # ∂L/∂g = Σ_t gy ⊙ W0 x̃ + s·rowdot(B, gyᵀ A x̃); Σ_t gy ⊙ W0 x̃ from the kept W0 x̃, or as
                # rowdot(W0, gyᵀ x̃) with gyᵀ x̃ (d_out×d_in) made and dropped here
                if base is not None:
                    dg = (gy2 * base).sum(0, dtype=g.dtype)
                else:
                    dg = (gy2.T @ x2).mul_(_cast(w0, cd)).sum(1, dtype=g.dtype)
                dg.add_((b.to(g.dtype) * p).sum(1), alpha=ctx.scaling)
                grads[6] = _cast(dg / norm, m_dtype)
        return tuple(grads)


def _w0_scaled(w0: Tensor, rows: Tensor, dtype: torch.dtype) -> Tensor:
    """diag(rows) · W0 in ``dtype``. w0: (d_out, d_in); rows: (d_out,)."""
    return _cast(w0, dtype) * _cast(rows, dtype).unsqueeze(1)


def _plain_weight(base_layer: nn.Module) -> Optional[Tensor]:
    """The base layer's weight if it is a plain 2-D float tensor (not quantized, no tensor subclass)."""
    w = getattr(base_layer, "weight", None)
    if type(w) not in (nn.Parameter, Tensor) or hasattr(base_layer, "W_q"):
        return None
    return w if w.ndim == 2 and w.is_floating_point() else None


def _plain_linear(m: nn.Module) -> bool:
    """A bias-free ``nn.Linear`` (what PEFT's DoRA makes for lora_A / lora_B)."""
    return type(m) is nn.Linear and m.bias is None


class FusedDoraLinearLayer(DoraLinearLayer):
    """PEFT's ``DoraLinearLayer`` (its forward unchanged, used where the fused path does not apply) with a cache of
    ||W0_i||² kept on the module (not in the state dict), keyed on the weight's storage, version counter, dtype,
    shape and device: in-place writes to the weight or replacing it recompute it; writes through
    ``weight.data`` bypass the version counter and are not seen. ``keep_base_output``: see :class:`_DoraLinear`."""

    keep_base_output: bool = False

    def w0_row_sq(self, w0: Tensor) -> Tensor:
        """:func:`w0_row_sq`, cached per (storage, version, dtype, shape, device) of W0; not under compile."""
        if torch.compiler.is_compiling():
            return w0_row_sq(w0)
        key = (w0.data_ptr(), w0._version, w0.dtype, tuple(w0.shape), w0.device)
        cached = getattr(self, "_w0_sq_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, w0_row_sq(w0))
            self._w0_sq_cache = cached
        return cached[1]


class FusedDoraLinearVariant(DoraLinearVariant):
    """PEFT's DoRA variant of ``lora.Linear`` whose forward runs :class:`_DoraLinear` (see the module doc)."""

    @staticmethod
    def forward(module: nn.Module, active_adapter: str, x: Tensor, result: Tensor, **kwargs: Any) -> Tensor:
        """The layer's output: ``result`` (the base layer's, (..., d_out)) with DoRA applied, as PEFT's.

        x: (..., d_in), already cast as PEFT casts it; in training with active dropout the LoRA path and the
        (g − 1)·W0 term see the dropped x, as in PEFT."""
        lora_A, lora_B = module.lora_A[active_adapter], module.lora_B[active_adapter]
        dora = module.lora_magnitude_vector[active_adapter]
        base = module.get_base_layer()
        w = _plain_weight(base)
        bias = getattr(base, "bias", None)
        if (w is None or not (_plain_linear(lora_A) and _plain_linear(lora_B)) or w.requires_grad
                or not isinstance(dora, FusedDoraLinearLayer) or (bias is not None and bias.ndim != 1)):
            return DoraLinearVariant.forward(module, active_adapter, x, result, **kwargs)
        dropout = module.lora_dropout[active_adapter]
        dropped = module.training and not isinstance(dropout, nn.Identity)
        w0 = w.T if dora.fan_in_fan_out else w
        scaling = module.scaling[active_adapter]
        norm = factored_row_norm(w0, lora_A.weight, lora_B.weight, scaling, dora.w0_row_sq(w0))
        return _DoraLinear.apply(result, dropout(x) if dropped else x, w0, bias, lora_A.weight, lora_B.weight,
                                 dora.weight, norm, scaling, dropped, dora.keep_base_output)


def install_fused_dora(model: nn.Module, *, keep_base_output: Union[bool, AbstractSet[str]] = False) -> int:
    """Swap the class of every PEFT ``DoraLinearLayer`` in ``model`` (that exact class: not the embedding or conv
    ones) to :class:`FusedDoraLinearLayer`, and of the ``DoraLinearVariant`` of each LoRA Linear that holds one
    to :class:`FusedDoraLinearVariant`. Parameters and state-dict keys are unchanged, so ``save_pretrained`` /
    ``PeftModel.from_pretrained`` work as before. ``keep_base_output``: trade memory for the backward's extra
    matmul (:class:`_DoraLinear`) in every layer (true), or in the adapted layers whose module name is or ends
    with ``.`` + one of the given names. Returns how many layers were swapped."""
    layers = [(n, m) for n, m in model.named_modules() if type(m) is DoraLinearLayer]
    for name, m in layers:
        m.__class__ = FusedDoraLinearLayer
        if isinstance(keep_base_output, bool):
            m.keep_base_output = keep_base_output
        else:
            owner = name.rsplit(".lora_magnitude_vector.", 1)[0]  # the adapted Linear's name
            m.keep_base_output = any(owner == k or owner.endswith("." + k) for k in keep_base_output)
    for mod in model.modules():
        for variant in getattr(mod, "lora_variant", {}).values():
            if type(variant) is DoraLinearVariant:
                variant.__class__ = FusedDoraLinearVariant
    return len(layers)
