"""AdaLoRA's per-step bookkeeping with few kernels and no host syncs, wrapping PEFT's implementation.

PEFT's ``RankAllocator`` walks ``model.named_parameters()`` at every step and launches ~8 small kernels per
adapter tensor (``update_ipt``); its ``mask_to_budget`` adds per-matrix ops, a ``kthvalue(...).item()`` and one
``.tolist()`` per matrix (host syncs); ``mask_using_rank_pattern`` builds a tensor from a Python list per matrix
per step; ``AdaLoraModel.forward`` computes the orthogonality term with a Python loop over every P and Q.
:func:`install_fused_adalora` swaps in:

* :class:`FusedRankAllocator` — the same state (``ipt``/``exp_avg_ipt``/``exp_avg_unc`` dicts keyed by PEFT's
  parameter names, so checkpoints and ``triplet_scores`` work unchanged), updated with ``torch._foreach_*`` ops
  in PEFT's order of arithmetic (bit-identical on the CPU); scores of matrices with equal shapes stacked, the
  threshold kept on the device. During the budget phase the rank pattern is a dict of boolean device tensors;
  it becomes PEFT's dict of lists at the final mask (one sync), and :func:`rank_pattern_lists` converts it
  on demand (call it before ``save_pretrained`` or saving the config mid-training).
* :class:`FusedAdaLoraModel` — PEFT's ``AdaLoraModel`` whose ``forward`` computes the orthogonality term with
  one batched matmul per group of equally shaped P (or Q) matrices.
* :class:`FusedSVDLinear` — PEFT's ``SVDLinear`` whose forward accumulates the adapter's product into the base
  output with one matmul (:func:`~harness.kernels.dora.accumulate_mm`), in the base output's dtype.
  PEFT's ``(… @ Bᵀ) * scaling / ranknum`` scales, divides and adds the (tokens × d_out) product in separate
  passes, forward and backward; with ``ranknum`` (a 1-element tensor) in float32, PEFT's default, the bf16
  product is promoted to float32 on the way.

Both cache the adapter parameters when installed: install after the adapters exist and before training
(moving the model with ``.to()`` keeps the parameter objects; re-creating adapter layers needs a re-install).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from peft import PeftModel
from peft.tuners.adalora.layer import RankAllocator, SVDLinear
from peft.tuners.adalora.model import AdaLoraModel
from torch import nn
from transformers.integrations import deepspeed_config

from harness.kernels.dora import accumulate_mm

log = logging.getLogger(__name__)

#: a rank pattern as the fused allocator leaves it during the budget phase (tensors) or as PEFT stores it (lists)
RankPattern = dict[str, Union[list[bool], torch.Tensor]]


@dataclass(frozen=True)
class _TripletGroup:
    """Adapted matrices whose P (lora_A, (r, d_in)) and Q (lora_B, (d_out, r)) shapes agree, stacked together."""

    a_names: list[str]
    e_names: list[str]
    b_names: list[str]
    e_params: list[nn.Parameter]  # λ, each (r, 1)


def _triplet_groups(named: Sequence[tuple[str, nn.Parameter]], adapter: str) -> list[_TripletGroup]:
    """PEFT's triplets (``name.replace("lora_X", "%s")``) grouped by (P shape, Q shape), in parameter order."""
    parts: dict[str, dict[str, tuple[str, nn.Parameter]]] = {}
    for n, p in named:
        for kind in ("lora_A", "lora_E", "lora_B"):
            if f"{kind}.{adapter}" in n:
                parts.setdefault(n.replace(kind, "%s"), {})[kind] = (n, p)
    groups: dict[tuple[torch.Size, torch.Size], _TripletGroup] = {}
    for name_m, t in parts.items():
        if len(t) != 3:
            raise ValueError(f"AdaLoRA matrix {name_m % '*'}: has {sorted(t)}, expected lora_A, lora_E and lora_B")
        key = (t["lora_A"][1].shape, t["lora_B"][1].shape)
        g = groups.setdefault(key, _TripletGroup([], [], [], []))
        g.a_names.append(t["lora_A"][0])
        g.e_names.append(t["lora_E"][0])
        g.b_names.append(t["lora_B"][0])
        g.e_params.append(t["lora_E"][1])
    return list(groups.values())


def _as_lists(pattern: RankPattern) -> dict[str, list[bool]]:
    """``pattern`` with its tensors as lists of bools (one device-to-host copy); the same dict if it has none."""
    tensors = {k: v for k, v in pattern.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        return pattern  # type: ignore[return-value]
    flat = torch.cat([t.reshape(-1).bool() for t in tensors.values()]).tolist()  # the one host sync
    out: dict[str, list[bool]] = {}
    start = 0
    for k, v in pattern.items():
        if isinstance(v, torch.Tensor):
            out[k] = flat[start:start + v.numel()]
            start += v.numel()
        else:
            out[k] = v
    return out


def rank_pattern_lists(alloc: RankAllocator) -> Optional[dict[str, list[bool]]]:
    """Make ``alloc.peft_config.rank_pattern`` PEFT's dict of lists (JSON, PEFT's own masking) and return it.

    A no-op for PEFT's allocator and after the final mask; mid budget phase it costs one host sync.
    """
    cfg = alloc.peft_config
    if cfg.rank_pattern:
        cfg.rank_pattern = _as_lists(cfg.rank_pattern)
    return cfg.rank_pattern


class FusedRankAllocator(RankAllocator):
    """PEFT's ``RankAllocator`` with ``update_ipt``, ``mask_to_budget`` and ``mask_using_rank_pattern`` over
    cached parameter lists: a few multi-tensor kernels per step, no host sync until the final mask."""

    def __init__(self, model: nn.Module, peft_config: Any, adapter_name: str) -> None:
        super().__init__(model, peft_config, adapter_name)
        named = list(model.named_parameters())
        # the same selections as PEFT's loops, in named_parameters order
        self._ipt_names = [n for n, _ in named if "lora_" in n and adapter_name in n]
        self._ipt_params = [p for n, p in named if "lora_" in n and adapter_name in n]
        self._e_names = [n for n, _ in named if f"lora_E.{adapter_name}" in n]
        self._groups = _triplet_groups(named, adapter_name)
        # (copy of the final pattern, its drop masks per group)
        self._final_masks: Optional[tuple[dict[str, list[bool]], list[torch.Tensor]]] = None

    @classmethod
    def from_allocator(cls, alloc: RankAllocator, model: nn.Module) -> "FusedRankAllocator":
        """A fused allocator for ``model`` (PEFT's ``base_model.model``) carrying ``alloc``'s config and state."""
        new = cls(model, alloc.peft_config, alloc.adapter_name)
        for key in ("beta1", "beta2", "init_bgt", "target_bgt", "name_set", "ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(new, key, getattr(alloc, key))
        return new

    # -- importance ---------------------------------------------------------------------------------------

    def update_ipt(self, model: nn.Module) -> None:
        """PEFT's update, per tensor: I = |p·∇p|, Ī ← β1·Ī + (1−β1)·I, Ū ← β2·Ū + (1−β2)·|I − Ī| (new tensors)."""
        names, params = self._ipt_names, self._ipt_params
        grads = [p.grad for p in params]
        missing = [n for n, g in zip(names, grads) if g is None]
        if missing:
            raise RuntimeError(f"AdaLoRA update_ipt: no gradient for {len(missing)} adapter parameters (e.g. "
                               f"{missing[0]}); call update_and_allocate after backward() and before zero_grad()")
        for n, p in zip(names, params):
            if n not in self.ipt:
                self.ipt[n] = torch.zeros_like(p)
                self.exp_avg_ipt[n] = torch.zeros_like(p)
                self.exp_avg_unc[n] = torch.zeros_like(p)
        b1, b2 = self.beta1, self.beta2
        with torch.no_grad():
            ipt = torch._foreach_mul(params, grads)
            torch._foreach_abs_(ipt)
            avg = torch._foreach_mul([self.exp_avg_ipt[n] for n in names], b1)
            torch._foreach_add_(avg, torch._foreach_mul(ipt, 1 - b1))
            dev = torch._foreach_sub(ipt, avg)
            torch._foreach_abs_(dev)
            torch._foreach_mul_(dev, 1 - b2)
            unc = torch._foreach_mul([self.exp_avg_unc[n] for n in names], b2)
            torch._foreach_add_(unc, dev)
        for n, i, a, u in zip(names, ipt, avg, unc):
            self.ipt[n], self.exp_avg_ipt[n], self.exp_avg_unc[n] = i, a, u

    def _group_scores(self) -> list[torch.Tensor]:
        """Triplet scores per group, (n_matrices, r): s(λ) + mean over P's row + mean over Q's column, s = Ī·Ū."""
        out = []
        for g in self._groups:
            names = [*g.a_names, *g.e_names, *g.b_names]
            s = torch._foreach_mul([self.exp_avg_ipt[n] for n in names], [self.exp_avg_unc[n] for n in names])
            m = len(g.e_names)
            s_a = torch.stack(s[:m]).mean(dim=2)  # (m, r, d_in) → (m, r)
            s_e = torch.stack(s[m:2 * m]).squeeze(-1)  # (m, r, 1) → (m, r)
            s_b = torch.stack(s[2 * m:]).mean(dim=1)  # (m, d_out, r) → (m, r)
            out.append(s_e + (s_a + s_b))  # PEFT's order: E + (A + B)
        return out

    # -- masking ------------------------------------------------------------------------------------------

    @staticmethod
    def _zero_masked(e_params: list[nn.Parameter], drop: torch.Tensor) -> None:
        """``masked_fill_(drop, 0)`` on every λ of a group at once; ``drop`` (n_matrices, r, 1) bool."""
        with torch.no_grad():
            filled = torch.stack(e_params).masked_fill_(drop, 0.0)
            torch._foreach_copy_(e_params, list(filled.unbind(0)))

    def mask_to_budget(self, model: nn.Module, budget: int) -> dict[str, torch.Tensor]:
        """Zero λ of the triplets scoring ≤ the (init_bgt − budget)-th smallest score; returns name → kept (r,)
        bool tensors on the device (no host sync)."""
        scores = self._group_scores()
        threshold = torch.kthvalue(torch.cat([s.reshape(-1) for s in scores]), k=self.init_bgt - budget).values
        kept: dict[str, torch.Tensor] = {}
        for g, s in zip(self._groups, scores):
            drop = s <= threshold  # (m, r)
            self._zero_masked(g.e_params, drop.unsqueeze(-1))
            kept.update(zip(g.e_names, (~drop).unbind(0)))
        return {n: kept[n] for n in self._e_names}

    def update_and_allocate(self, model: nn.Module, global_step: int,
                            force_mask: bool = False) -> tuple[int, Optional[RankPattern]]:
        """PEFT's step; the final (forced) mask's pattern comes back as PEFT's lists (the one sync)."""
        budget, pattern = super().update_and_allocate(model, global_step, force_mask)
        if force_mask and pattern:
            pattern = _as_lists(pattern)
        return budget, pattern

    def mask_using_rank_pattern(self, model: nn.Module, rank_pattern: RankPattern) -> None:
        """Re-apply the final pattern (3 kernels per group). Device masks are built once per pattern content
        (a pattern of lists is compared with a copy, so one edited in place is seen); keys may lack the
        adapter name (after ``save_pretrained``), as in PEFT."""
        if not all(isinstance(v, list) for v in rank_pattern.values()):
            drops = self._drop_masks(rank_pattern)  # device tensors: nothing to cache
        else:
            if self._final_masks is None or self._final_masks[0] != rank_pattern:
                self._final_masks = ({k: list(v) for k, v in rank_pattern.items()}, self._drop_masks(rank_pattern))
            drops = self._final_masks[1]
        for g, drop in zip(self._groups, drops):
            self._zero_masked(g.e_params, drop)

    def _drop_masks(self, rank_pattern: RankPattern) -> list[torch.Tensor]:
        """Per group, (n_matrices, r, 1) bool on the parameters' device (one copy): True where λ is masked."""
        truncated = self.adapter_name not in next(iter(rank_pattern))
        out = []
        for g in self._groups:
            keys = [n.replace(f".{self.adapter_name}", "") if truncated else n for n in g.e_names]
            keep = torch.stack([torch.as_tensor(rank_pattern[k], dtype=torch.bool) for k in keys])
            out.append(~keep.to(g.e_params[0].device).unsqueeze(-1))
        return out


# ---------------------------------------------------------------------------------------------------------
# the orthogonality regulariser


@dataclass(frozen=True)
class _OrthGroup:
    """Equally shaped P matrices (``kind`` "A", (r, d_in)) or Q matrices ("B", (d_out, r))."""

    kind: str
    params: list[nn.Parameter]


def _orth_groups(model: nn.Module, adapter: str) -> list[_OrthGroup]:
    """The matrices of PEFT's loop (names with lora_A / lora_B and the adapter name) grouped by kind and shape."""
    groups: dict[tuple[str, torch.Size], _OrthGroup] = {}
    for n, p in model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and adapter in n:
            kind = "A" if "lora_A" in n else "B"
            groups.setdefault((kind, p.shape), _OrthGroup(kind, [])).params.append(p)
    return list(groups.values())


def orthogonality_term(groups: Sequence[_OrthGroup]) -> Union[torch.Tensor, int]:
    """R(P, Q) = mean over matrices of ‖PPᵀ − I‖_F (P (r, d_in)) and ‖QᵀQ − I‖_F (Q (d_out, r)); 0 if none."""
    covs: dict[int, list[torch.Tensor]] = {}
    for g in groups:
        w = torch.stack(g.params)  # (m, r, d_in) or (m, d_out, r)
        cov = w @ w.mT if g.kind == "A" else w.mT @ w  # (m, r, r)
        covs.setdefault(cov.shape[-1], []).append(cov)
    if not covs:
        return 0
    norms = []
    for r, cs in covs.items():
        c = torch.cat(cs)
        eye = torch.eye(r, dtype=c.dtype, device=c.device)
        norms.append(torch.linalg.vector_norm(c - eye, ord=2, dim=(-2, -1)))  # Frobenius, as torch.norm("fro")
    n = sum(len(g.params) for g in groups)
    return torch.cat(norms).sum() / n


class FusedAdaLoraModel(AdaLoraModel):
    """PEFT's ``AdaLoraModel`` with the orthogonality term batched per matrix shape (see the module doc)."""

    _orth: list[_OrthGroup]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward; γ·R(P, Q) added to ``outputs.loss`` when the model returns a loss."""
        outputs = self.model.forward(*args, **kwargs)
        if (getattr(outputs, "loss", None) is not None) and isinstance(outputs.loss, torch.Tensor):
            orth_reg_weight = self.peft_config[self.trainable_adapter_name].orth_reg_weight
            if orth_reg_weight < 0:
                raise ValueError("orth_reg_weight should be greater than or equal to 0. ")
            outputs.loss += orth_reg_weight * orthogonality_term(self._orth)
        return outputs


class FusedSVDLinear(SVDLinear):
    """PEFT's AdaLoRA ``SVDLinear`` whose forward adds x̃ (P ⊙ λ)ᵀ (c·Q)ᵀ, c = scaling / (ranknum + 1e-5), to the
    base output with one matmul (see the module doc); the same quantity as PEFT's
    ``result += (x̃ @ (P * λ).T @ Q.T) * scaling / (ranknum + 1e-5)``, in the base output's dtype."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """x: (..., d_in) → (..., d_out). Disabled or merged adapters: PEFT's forward."""
        if self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        shape, dtype = result.shape, result.dtype
        out = result.reshape(-1, shape[-1])  # (T, d_out)
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            a, e, b = self.lora_A[name], self.lora_E[name], self.lora_B[name]  # (r, d_in), (r, 1), (d_out, r)
            x = self._cast_input_dtype(x, a.dtype)
            h = self.lora_dropout[name](x) @ (a * e).T  # (..., r), under autocast in its dtype
            qc = b * (self.scaling[name] / (self.ranknum[name] + 1e-5))  # (d_out, r)
            out = accumulate_mm(out, h.reshape(-1, h.shape[-1]).to(dtype), qc.to(dtype).T, owned=False)
        return out.view(shape)


def install_fused_adalora(peft_model: PeftModel, *, layers: bool = True) -> None:
    """Swap ``peft_model``'s AdaLoRA allocator and model class for the fused ones (state carried over) and, with
    ``layers``, the class of its ``SVDLinear`` layers for :class:`FusedSVDLinear`."""
    base = peft_model.base_model
    if not isinstance(base, AdaLoraModel):
        raise TypeError(f"install_fused_adalora: expected a PEFT AdaLoRA model, got {type(base).__name__}")
    if not hasattr(base, "rankallocator"):
        raise ValueError("install_fused_adalora: the AdaLoRA adapter is in inference mode (no rank allocator)")
    if deepspeed_config() is not None:
        raise ValueError("install_fused_adalora: DeepSpeed is active; the fused AdaLoRA reads p.grad and does "
                         "not gather ZeRO-3 partitions — use PEFT's own (method.fused=false)")
    base.rankallocator = FusedRankAllocator.from_allocator(base.rankallocator, base.model)
    base.__class__ = FusedAdaLoraModel
    base._orth = _orth_groups(base.model, base.trainable_adapter_name)
    if layers:
        for m in base.model.modules():
            if type(m) is SVDLinear:
                m.__class__ = FusedSVDLinear
    log.debug("fused AdaLoRA installed: %d triplet groups, %d orthogonality groups",
              len(base.rankallocator._groups), len(base._orth))
