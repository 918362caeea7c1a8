"""Sequence classification: one label per text (or text pair), a new classification head on the encoder, cross
entropy, accuracy-type metrics (GLUE's), chance = the majority class."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import metrics as metric_fns
from harness.problems import register_problem
from harness.problems.base import Evaluation, ProblemType, to_device
from harness.tasks import Encoded, Split, collate, encode


@register_problem("classification")
class Classification(ProblemType):
    """``AutoModelForSequenceClassification`` with ``num_labels`` outputs; logits (B, C), labels (B,) int."""

    auto_model = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    default_metrics = ("accuracy",)

    def config_kwargs(self, num_labels: int) -> dict[str, Any]:
        return {"num_labels": num_labels, "problem_type": "single_label_classification"}

    def encode(self, split: Split, tokenizer: Any, max_length: int) -> Encoded:
        return encode(split, tokenizer, max_length)

    def collate(self, enc: Encoded, idx: np.ndarray, pad_id: int, multiple: int = 0,
                buckets: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        return collate(enc, idx, pad_id, multiple, buckets)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross entropy of logits (B, C) against labels (B,), as transformers computes it."""
        return F.cross_entropy(logits.float(), batch["labels"])

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions (B,) from logits (B, C): the arg max."""
        return logits.argmax(-1)

    pred_dtype: Any = np.int64

    @torch.no_grad()
    def evaluate(self, model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int, device: torch.device,
                 metric_names: tuple[str, ...], autocast: Callable[[], Any], pad_multiple: int = 0) -> Evaluation:
        """Predictions (N,) against labels (N,) in length-sorted batches (less padding); ``loss`` the mean loss."""
        was_training = model.training
        model.eval()
        order = np.argsort([len(s) for s in enc.input_ids], kind="stable")
        preds = np.empty(len(enc), dtype=self.pred_dtype)
        losses = []
        for start in range(0, len(enc), batch_size):
            idx = order[start : start + batch_size]
            batch = to_device(self.collate(enc, idx, pad_id, pad_multiple), device)
            labels = batch.pop("labels")
            with autocast():
                logits = model(**batch).logits.float()
            losses.append(self.loss(logits, {"labels": labels}) * len(idx))
            preds[idx] = self.predict(logits).cpu().numpy()
        model.train(was_training)
        result = metric_fns.compute(metric_names, preds, enc.labels)
        result["loss"] = float(torch.stack(losses).sum()) / len(enc)
        return Evaluation(result)

    def chance(self, labels: np.ndarray, main_metric: str) -> Optional[float]:
        """Accuracy of always predicting the most frequent label (other metrics: a constant predictor's 0)."""
        if main_metric != "accuracy":
            return 0.0 if main_metric in ("matthews", "f1") else None
        return float(np.bincount(labels).max() / len(labels)) if len(labels) else None
