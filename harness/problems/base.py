"""The interface of a problem type: how a task's examples become batches, which model head and PEFT task type
train on them, the loss, the evaluation with its metrics, and the chance level.

A problem type is one file in ``harness/problems/`` that registers a :class:`ProblemType` subclass by name
(``@register_problem("name")``); a task names it in ``task.problem`` (docs/configuration.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch import nn

from harness.families import Family


@dataclass
class Evaluation:
    """What scoring one split gives: metrics (name -> value), for generative problems one row per example (its id,
    the generation, the extracted answer, the score) that the run saves, and speed (``perf``: e.g. generated
    tokens/s)."""

    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    perf: dict[str, float] = field(default_factory=dict)


class ProblemType:
    """One kind of learning problem. Subclasses set the class attributes and implement the methods.

    ``auto_model``: the transformers Auto class that builds the model (head included); ``peft_task_type``: the
    ``task_type`` PEFT wraps it with; ``default_metrics``: the metrics of a task that names none (the first is the
    main one); ``eval_at_start``: evaluate before the first step (the base model's score); ``label_kind``: what a
    task's label column holds — ``class`` (label strings, ids in order), ``number`` or ``text`` (target strings).
    """

    name: ClassVar[str] = ""
    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    default_metrics: ClassVar[tuple[str, ...]] = ()
    eval_at_start: ClassVar[bool] = False
    label_kind: ClassVar[str] = "class"
    #: the model computes this problem's loss itself from the batch's labels (transformers' heads do for the problem
    #: types here); False: the loop backpropagates :meth:`loss` and gives the model no labels (then methods that
    #: add terms to the model's loss, AdaLoRA's orthogonality, are refused)
    model_loss: ClassVar[bool] = True

    def configure(self, task: Any, model_conf: Any) -> None:
        """Take this run's task settings and model config (e.g. generation lengths, the context size)."""

    def model_class(self) -> Any:
        """The transformers Auto class of :attr:`auto_model`."""
        import transformers

        return getattr(transformers, self.auto_model)

    def config_kwargs(self, num_labels: int) -> dict[str, Any]:
        """Keyword arguments for the model's transformers config (e.g. the number of labels)."""
        return {}

    def head(self, family: Family) -> tuple[str, ...]:
        """Modules trained in full by every method besides the adapters (a new classification head)."""
        return family.head

    def encode(self, split: Any, tokenizer: Any, max_length: int) -> Any:
        """Tokenize a split once (unpadded); what :meth:`collate` and :meth:`evaluate` read."""
        raise NotImplementedError

    def collate(self, enc: Any, idx: np.ndarray, pad_id: int, multiple: int = 0,
                buckets: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """A training batch of the examples ``idx``: input_ids, attention_mask (B, L), labels."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task loss (a scalar) from the model's logits and the batch: what ``train/loss`` reports."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, enc: Any, *, batch_size: int, pad_id: int, device: torch.device,
                 metric_names: tuple[str, ...], autocast: Callable[[], Any], pad_multiple: int = 0) -> Evaluation:
        """Score a whole split (``loss`` among the metrics)."""
        raise NotImplementedError

    def chance(self, labels: np.ndarray, main_metric: str) -> Optional[float]:
        """The main metric of a constant or random predictor on these labels (None where not defined)."""
        return None


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a CPU batch to the device; through pinned memory and without blocking on CUDA."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
