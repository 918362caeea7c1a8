"""The interface every method implements (wrapping PEFT, or full fine-tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from harness.config import MethodConfig
from harness.families import MatrixRef


class Method:
    """A fine-tuning method. Subclasses live in one file each and register themselves by name.

    Lifecycle: ``validate_config`` (no model) → ``__init__(cfg, total_steps)`` → ``wrap(model, ...)`` →
    per optimizer step ``after_optimizer_step`` (before ``zero_grad``) → ``finish`` → ``save``. A method with
    state of its own beyond the weights (AdaLoRA's importance averages) saves it with ``state_dict``.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: Time of one training step relative to full fine-tuning of the same model (measured on one H200, MiniLM,
    #: SST-2 batches: benchmarks/results/sweep_packing_h200.json). The packed launcher starts costly jobs first.
    step_cost: ClassVar[float] = 1.0

    def __init__(self, cfg: MethodConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps

    @classmethod
    def validate_config(cls, cfg: MethodConfig) -> None:
        """Range checks on the method's own keys (raise ConfigError)."""

    def validate_run(self) -> None:
        """Checks that need the run length (e.g. AdaLoRA's schedule must fit); raise ConfigError."""

    def validate_targets(self, targets: list[MatrixRef]) -> None:
        """Checks that need the adapted matrices (before any weight is loaded); raise ConfigError."""

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...]) -> nn.Module:
        """Return the model to train, with exactly this method's parameters trainable."""
        raise NotImplementedError

    def loss_terms(self, outputs: Any, task_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra loss terms already included in ``outputs.loss`` (detached, for logging)."""
        return {}

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after ``optimizer.step()`` and before ``zero_grad()``; ``step`` counts from 1."""

    def log_metrics(self, model: nn.Module) -> dict[str, float]:
        """Method-specific metrics at a logging step (may sync the device)."""
        return {}

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """The method's own training state beyond the weights (plain values and tensors), for checkpoints."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state into a freshly wrapped model (weights are already loaded)."""

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Final checks and summary entries; raise RunFailed when the run is invalid."""
        return {}

    def effective_parameters(self, model: nn.Module) -> int:
        """Parameters the final model needs (differs from trained ones for AdaLoRA)."""
        return trainable_parameters(model)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Save the final adapter (``PeftModel.from_pretrained`` loads it) or model."""
        model.save_pretrained(str(out_dir))


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
