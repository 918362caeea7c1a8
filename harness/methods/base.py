"""The interface every method implements (wrapping PEFT, or full fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from harness.config import MethodConfig
from harness.errors import ConfigError
from harness.families import MatrixRef


@dataclass
class SnapshotView:
    """What :mod:`harness.snapshots` reads of one adapted matrix of the live model.

    ``form``: a rebuild recipe of :data:`harness.snapshot_format.FORMS`; ``tensors()`` returns that form's live
    tensors (detached views, no copy). ``base``: the Linear holding the base weight (frozen, or trained by full
    fine-tuning). ``pretrained()``: W0 (out, in), the pretrained weight, where ``base.weight`` is not it (a method
    that rewrites the base weight, as PiSSA's residual); None: ``base.weight`` at the start of training.
    ``rank``: r (None for a dense weight); ``scale``: s of the form.
    """

    form: str
    base: nn.Linear
    tensors: Callable[[], dict[str, torch.Tensor]]
    scale: float = 1.0
    rank: Optional[int] = None
    adapter: Optional[str] = None
    pretrained: Optional[Callable[[], torch.Tensor]] = None


class Method:
    """A fine-tuning method. Subclasses live in one file each (harness/methods/, discovered) and register
    themselves by name; docs/methods.md.

    Lifecycle: ``validate_config`` (no model) → ``__init__(cfg, total_steps)`` → ``wrap(model, ...)`` →
    per optimizer step ``after_optimizer_step`` (before ``zero_grad``) → ``finish`` → ``save``. A method with
    state of its own beyond the weights (AdaLoRA's importance averages) saves it with ``state_dict``.
    What it trains: ``trains`` (parameter-name markers) and ``trained_parameters``/``effective_parameters``;
    what a snapshot keeps of a matrix and how its effective weight is rebuilt: ``snapshot_view``.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: display name in tables, legends and records (run.json/summary.json ``method_label``)
    label: ClassVar[str] = ""
    #: colour in plots (a matplotlib colour; run.json/summary.json ``method_color``)
    color: ClassVar[str] = "#7f7f7f"
    #: marker in plots (a matplotlib marker; ``method_marker``)
    marker: ClassVar[str] = "o"
    #: the letter of its budget in labels, ``LoRA r=8`` (``method_budget_symbol``)
    budget_symbol: ClassVar[str] = "r"
    #: place in tables and legends, lower first; methods of one order a–z (``method_order``)
    order: ClassVar[int] = 100
    #: the method every other one is contrasted with in a comparison (full fine-tuning; ``method_baseline``)
    baseline: ClassVar[bool] = False
    #: substrings of the names of the parameters the method trains besides the task head ("" = every parameter)
    trains: ClassVar[tuple[str, ...]] = ()
    #: whether the pretrained weights stay frozen (adapters: bf16 frozen weights on CUDA, an ``adapter/`` folder)
    frozen_base: ClassVar[bool] = True
    #: files and folders of its own the method may write into the run folder (besides the harness's)
    outputs: ClassVar[tuple[str, ...]] = ()
    #: Time of one training step relative to full fine-tuning of the same model (measured on one H200, MiniLM,
    #: SST-2 batches: benchmarks/results/sweep_packing_h200.json). The packed launcher starts costly jobs first.
    step_cost: ClassVar[float] = 1.0
    #: the method's loss terms are added to the model's own loss (``outputs.loss``) by PEFT: AdaLoRA's
    adds_to_model_loss: ClassVar[bool] = False
    #: the config key holding the rank of the update of each adapted matrix (checked against min(d_in, d_out)
    #: before any weight loads); None: the method has no such per-matrix rank (full FT, VeRA's shared projections)
    rank_key: ClassVar[Optional[str]] = None

    def __init__(self, cfg: MethodConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = total_steps

    @classmethod
    def display(cls) -> dict[str, Any]:
        """How analysis shows the method, as its runs record it (run.json and summary.json)."""
        return {"method_label": cls.label, "method_color": cls.color, "method_marker": cls.marker,
                "method_budget_symbol": cls.budget_symbol, "method_order": cls.order,
                "method_baseline": cls.baseline}

    @classmethod
    def validate_config(cls, cfg: MethodConfig) -> None:
        """Range checks on the method's own keys (raise ConfigError)."""

    def validate_run(self) -> None:
        """Checks that need the run length (e.g. AdaLoRA's schedule must fit); raise ConfigError."""

    def validate_targets(self, targets: list[MatrixRef]) -> None:
        """Checks that need the adapted matrices (before any weight is loaded); raise ConfigError."""

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        """Return the model to train, with exactly this method's parameters trainable; ``head``: modules trained in
        full (a new task head), ``task_type``: PEFT's task type of the problem (SEQ_CLS, CAUSAL_LM, ...)."""
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

    def trained_parameters(self, model: nn.Module) -> int:
        """Parameters trained (``requires_grad``), the task head included."""
        return trainable_parameters(model)

    def effective_parameters(self, model: nn.Module) -> int:
        """Parameters the final model needs (differs from trained ones for AdaLoRA)."""
        return trainable_parameters(model)

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """How snapshots read the adapted matrix ``module`` (a PEFT layer, or the Linear itself); ConfigError
        when this method cannot snapshot it."""
        raise NotImplementedError

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Save the final adapter (``PeftModel.from_pretrained`` loads it) or model."""
        model.save_pretrained(str(out_dir))

    @classmethod
    def save_dir(cls) -> str:
        """The run-folder name :meth:`save` writes into: ``adapter`` or, when the base trains, ``model``."""
        return "adapter" if cls.frozen_base else "model"


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peft_layer(module: nn.Module, kind: type) -> tuple[nn.Linear, str]:
    """(base Linear, active adapter name) of a PEFT tuner layer of class ``kind``; ConfigError otherwise."""
    if not isinstance(module, kind):
        raise ConfigError(f"snapshot: cannot snapshot a {type(module).__name__} (expected a PEFT {kind.__name__})")
    if getattr(module, "fan_in_fan_out", False):
        raise ConfigError("snapshot: fan_in_fan_out layers (GPT-2 Conv1D) are not supported")
    return module.get_base_layer(), module.active_adapters[0]
