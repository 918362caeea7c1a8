"""DoRA (Liu et al.): LoRA on the direction plus a trained magnitude vector, PEFT's ``use_dora=True``."""

from __future__ import annotations

from dataclasses import dataclass

from harness.methods import register
from harness.methods.lora import Lora, LoraMethodConfig


@dataclass
class DoraMethodConfig(LoraMethodConfig):
    """DoRA: W' = m ⊙ (W0 + s·BA) / ||W0 + s·BA||_row, m ∈ R^{out} initialised to ||W0||_row."""

    name: str = "dora"


@register("dora")
class Dora(Lora):
    """PEFT LoRA with ``use_dora=True``."""

    config_cls = DoraMethodConfig
    use_dora = True
