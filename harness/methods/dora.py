"""DoRA (Liu et al.): LoRA on the direction plus a trained magnitude vector, PEFT's ``use_dora=True``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.fast_dora import install_fused_dora
from harness.methods.lora import Lora, LoraMethodConfig

log = logging.getLogger(__name__)


@dataclass
class DoraMethodConfig(LoraMethodConfig):
    """DoRA: W' = m ⊙ (W0 + s·BA) / ||W0 + s·BA||_row, m ∈ R^{out} initialised to ||W0||_row.

    ``fused``: the harness's fused DoRA forward (harness/methods/fast_dora.py), equivalent to PEFT's within
    fp tolerance; false = PEFT's own. ``keep_base_output`` (fused only): keep each layer's W0·x for the
    magnitude's gradient (PEFT's activation memory) instead of an extra d_out×d_in matmul in the backward.
    """

    name: str = "dora"
    fused: bool = True
    keep_base_output: bool = False


@register("dora")
class Dora(Lora):
    """PEFT LoRA with ``use_dora=True``; with ``fused``, PEFT's DoRA Linear forward swapped for the harness's."""

    config_cls = DoraMethodConfig
    use_dora = True

    @classmethod
    def validate_config(cls, cfg: DoraMethodConfig) -> None:  # type: ignore[override]
        super().validate_config(cfg)
        if cfg.keep_base_output and not cfg.fused:
            raise ConfigError("method.keep_base_output=true needs method.fused=true (PEFT's own DoRA always keeps "
                              "W0·x); set method.fused=true or drop keep_base_output")

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...]) -> nn.Module:
        model = super().wrap(model, targets, head)
        if self.cfg.fused:
            n = install_fused_dora(model, keep_base_output=self.cfg.keep_base_output)
            log.info("DoRA: fused forward on %d Linear layers (harness/methods/fast_dora.py)%s", n,
                     ", W0·x kept for the magnitude's gradient" if self.cfg.keep_base_output else "")
        return model
