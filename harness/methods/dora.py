"""DoRA (Liu et al.): LoRA on the direction plus a trained magnitude vector, PEFT's ``use_dora=True``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

from harness.errors import ConfigError
from harness.families import MATRIX_TYPES, MatrixRef
from harness.kernels import fast_path_available
from harness.methods import register
from harness.methods.base import SnapshotView
from harness.methods.lora import Lora, LoraMethodConfig

log = logging.getLogger(__name__)


@dataclass
class DoraMethodConfig(LoraMethodConfig):
    """DoRA: W' = m ⊙ (W0 + s·BA) / ||W0 + s·BA||_row, m ∈ R^{out} initialised to ||W0||_row.

    ``fused``: the harness's fused DoRA forward (harness/kernels/dora.py), equivalent to PEFT's within
    fp tolerance; false = PEFT's own. ``keep_base_output`` (fused only): keep W0·x for the magnitude's
    gradient (PEFT's activation memory, tokens × d_out per layer) instead of an extra d_out×d_in matmul in the
    backward — true (every layer), false, or a list of matrix types / module-name suffixes as in ``targets``
    (the matmul saved per byte kept is d_in: keep the layers with the widest input first).
    """

    name: str = "dora"
    fused: bool = True
    keep_base_output: Any = False  # bool or list[str]: OmegaConf has no Union of these


@register("dora")
class Dora(Lora):
    """PEFT LoRA with ``use_dora=True``; with ``fused``, PEFT's DoRA Linear forward swapped for the harness's."""

    step_cost = 2.6
    label = "DoRA"
    color = "#ff7f0e"
    marker = "D"
    order = 2
    trains = ("lora_A", "lora_B", "lora_magnitude_vector")

    config_cls = DoraMethodConfig
    use_dora = True

    @classmethod
    def validate_config(cls, cfg: DoraMethodConfig) -> None:  # type: ignore[override]
        super().validate_config(cfg)
        keep = cfg.keep_base_output
        if not isinstance(keep, bool) and not (isinstance(keep, (list, tuple)) and keep
                                               and all(isinstance(k, str) for k in keep)):
            raise ConfigError(f"method.keep_base_output: expected true, false or a list of matrix types "
                              f"{list(MATRIX_TYPES)} / module-name suffixes, got {keep!r}")
        if keep and not cfg.fused:
            raise ConfigError("method.keep_base_output=true needs method.fused=true (PEFT's own DoRA always keeps "
                              "W0·x); set method.fused=true or drop keep_base_output")
        if isinstance(keep, (list, tuple)) and all(t in MATRIX_TYPES for t in cfg.targets):
            missing = [k for k in keep if k in MATRIX_TYPES and k not in cfg.targets]
            if missing:
                raise ConfigError(f"method.keep_base_output: {missing} not among method.targets {list(cfg.targets)}; "
                                  f"keep W0·x only for adapted matrix types")

    def validate_targets(self, targets: list[MatrixRef]) -> None:
        if self.cfg.fused:
            kept_layers(self.cfg.keep_base_output, targets)  # each entry names an adapted layer

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        model = super().wrap(model, targets, head, task_type)
        if self.cfg.fused and fast_path_available("method.fused (DoRA's fused forward)"):
            from harness.kernels.dora import install_fused_dora

            keep = kept_layers(self.cfg.keep_base_output, targets)
            n = install_fused_dora(model, keep_base_output=keep)
            n_keep = n if keep is True else 0 if keep is False else len(keep)
            log.info("DoRA: fused forward on %d Linear layers (harness/kernels/dora.py)%s", n,
                     f", W0·x kept for the magnitude's gradient on {n_keep}" if n_keep else "")
        return model

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """m ⊙ V/‖V‖_row with V = W0 + s·B A: m (out,), A (r, in), B (out, r)."""
        view = super().snapshot_view(module)
        a = view.adapter
        view.form = "magnitude_low_rank"
        view.tensors = lambda: {"m": module.lora_magnitude_vector[a].weight.detach(),
                                "A": module.lora_A[a].weight.detach(), "B": module.lora_B[a].weight.detach()}
        return view


def kept_layers(keep: Union[bool, list[str]], targets: list[MatrixRef]) -> Union[bool, set[str]]:
    """``method.keep_base_output`` as install_fused_dora takes it: a bool, or the module names of the adapted
    layers whose matrix type or name suffix is listed (ConfigError for an entry that matches none)."""
    if isinstance(keep, bool):
        return keep
    names: set[str] = set()
    for k in keep:
        hits = [t.name for t in targets if t.selected_by(k)]
        if not hits:
            raise ConfigError(f"method.keep_base_output: '{k}' matches none of the adapted layers; use matrix "
                              f"types {sorted({t.type for t in targets})} or suffixes of names such as "
                              f"'{targets[0].name}'")
        names.update(hits)
    return names
