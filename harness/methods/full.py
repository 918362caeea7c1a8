"""Full fine-tuning: every parameter is trained (targets only choose which matrices are snapshotted)."""

from __future__ import annotations

from torch import nn

from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import Method, SnapshotView


@register("full")
class FullFineTuning(Method):
    """All weights trainable; no PEFT wrapper."""

    label = "Full FT"
    color = "#444444"
    marker = "s"
    order = 0
    baseline = True
    trains = ("",)
    frozen_base = False

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """The trained weight itself (snapshots keep per-row/column summaries, the matrix where asked)."""
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"snapshot: cannot snapshot a {type(module).__name__} (expected nn.Linear)")
        return SnapshotView("dense", module, lambda: {"W": module.weight.detach()})
