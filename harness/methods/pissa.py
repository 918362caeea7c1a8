"""PiSSA (Meng et al.): LoRA initialised from the principal singular vectors, PEFT's ``init_lora_weights="pissa"``.

PEFT factors the pretrained W = U S Vᵀ and starts the adapter at B0 = U_r S_r^½ / √s, A0 = S_r^½ V_rᵀ / √s, while
it rewrites the frozen base weight to the residual W_res = W − s·B0 A0. The effective weight W_res + s·B A therefore
equals W0 + s·(B A − B0 A0) with W0 the **pretrained** weight, and that is what snapshots keep and measure
against (form ``low_rank_shifted``): ΔM/ΔD are changes from the pretrained model, never from the residual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from torch import nn

from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import SnapshotView
from harness.methods.lora import Lora, LoraMethodConfig

#: ``method.init``: an exact SVD, or PEFT's fast randomized one with N subspace iterations
INIT = re.compile(r"pissa(_niter_[1-9]\d*)?")


@dataclass
class PissaMethodConfig(LoraMethodConfig):
    """PiSSA: LoRA's keys, ``init`` = ``pissa`` (exact SVD) or ``pissa_niter_<N>`` (randomized SVD, N iterations).
    The paper trains without dropout and with alpha = r (s = 1): conf/method/pissa.yaml."""

    name: str = "pissa"
    dropout: float = 0.0
    init: str = "pissa"


@register("pissa")
class Pissa(Lora):
    """PEFT LoRA with ``init_lora_weights=<init>``; keeps each adapted matrix's pretrained weight and initial
    factors (on the host) so that snapshots measure against the pretrained weight."""

    label = "PiSSA"
    color = "#9467bd"
    step_cost = 1.1  # LoRA's step; the SVD at the start is a one-off
    config_cls = PissaMethodConfig

    @classmethod
    def validate_config(cls, cfg: PissaMethodConfig) -> None:  # type: ignore[override]
        super().validate_config(cfg)
        if not INIT.fullmatch(cfg.init):
            raise ConfigError(f"method.init: 'pissa' (exact SVD) or 'pissa_niter_<N>' (randomized SVD, N >= 1 "
                              f"iterations, e.g. pissa_niter_4), got '{cfg.init}'")

    def peft_config(self, targets: list[MatrixRef], head: tuple[str, ...], task_type: str = "SEQ_CLS") -> LoraConfig:
        peft_cfg = super().peft_config(targets, head, task_type)
        peft_cfg.init_lora_weights = self.cfg.init
        return peft_cfg

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        """PEFT's wrap; before it, a host copy of each adapted matrix's pretrained weight W0 (out, in), after it,
        of its initial factors A0 (r, in), B0 (out, r), keyed by PEFT's layer."""
        modules = dict(model.named_modules())
        pretrained = {t.name: modules[t.name].weight.detach().to("cpu", copy=True) for t in targets}
        model = super().wrap(model, targets, head, task_type)
        self.start: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for name, mod in model.named_modules():
            if isinstance(mod, LoraLayer):
                target = next(t for t in pretrained if name == t or name.endswith("." + t))
                a = mod.active_adapters[0]
                self.start[mod] = (pretrained[target], mod.lora_A[a].weight.detach().to("cpu", copy=True),
                                   mod.lora_B[a].weight.detach().to("cpu", copy=True))
        return model

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """W0 + s·(B A − B0 A0) with W0 the pretrained weight: A, A0 (r, in), B, B0 (out, r)."""
        view = super().snapshot_view(module)
        a, base = view.adapter, view.base
        w0, a0, b0 = self.start[module]
        lora_a, lora_b = module.lora_A[a].weight, module.lora_B[a].weight
        a0, b0 = a0.to(lora_a.device, lora_a.dtype), b0.to(lora_b.device, lora_b.dtype)
        w0 = w0.to(base.weight.device, base.weight.dtype)
        view.form = "low_rank_shifted"
        view.tensors = lambda: {"A": lora_a.detach(), "B": lora_b.detach(), "A0": a0, "B0": b0}
        view.pretrained = lambda: w0
        return view
