"""Regression: one number per text (pair), a one-output head, mean squared error, correlation metrics."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from harness.problems import register_problem
from harness.problems.classification import Classification


@register_problem("regression")
class Regression(Classification):
    """``AutoModelForSequenceClassification`` with one output; logits (B, 1), labels (B,) float."""

    default_metrics = ("pearson", "spearman", "mse")
    label_kind = "number"
    pred_dtype = np.float64

    def config_kwargs(self, num_labels: int) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE of logits (B, 1) against labels (B,)."""
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"].float())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1)

    def chance(self, labels: np.ndarray, main_metric: str) -> Optional[float]:
        """A constant predictor correlates 0 with the labels."""
        return 0.0 if main_metric in ("pearson", "spearman", "pearson_spearman") else None
