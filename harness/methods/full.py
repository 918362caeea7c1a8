"""Full fine-tuning: every parameter is trained (targets only choose which matrices are snapshotted)."""

from __future__ import annotations

from torch import nn

from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import Method


@register("full")
class FullFineTuning(Method):
    """All weights trainable; no PEFT wrapper."""

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...]) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
