"""DoRA (Liu et al.): LoRA on the direction plus a trained magnitude vector, PEFT's ``use_dora=True``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from harness.families import MatrixRef
from harness.methods import register
from harness.methods.fast_dora import install_fused_dora
from harness.methods.lora import Lora, LoraMethodConfig

log = logging.getLogger(__name__)


@dataclass
class DoraMethodConfig(LoraMethodConfig):
    """DoRA: W' = m ⊙ (W0 + s·BA) / ||W0 + s·BA||_row, m ∈ R^{out} initialised to ||W0||_row.

    ``fused``: the harness's fused DoRA forward (harness/methods/fast_dora.py), equivalent to PEFT's within
    fp tolerance; false = PEFT's own.
    """

    name: str = "dora"
    fused: bool = True


@register("dora")
class Dora(Lora):
    """PEFT LoRA with ``use_dora=True``; with ``fused``, PEFT's DoRA Linear forward swapped for the harness's."""

    config_cls = DoraMethodConfig
    use_dora = True

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...]) -> nn.Module:
        model = super().wrap(model, targets, head)
        if self.cfg.fused:
            log.info("DoRA: fused forward on %d Linear layers (harness/methods/fast_dora.py)",
                     install_fused_dora(model))
        return model
