"""Names for display and the direction of every column: methods, tasks, metrics, costs.

A method's display (label, colour, marker, budget letter, order, whether it is the baseline) comes from its
run record (``method_label`` … in run.json / summary.json, declared by the method's file):
:func:`method_display`. This module names no method.
"""

from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from harness.metrics import METRICS
from harness.record import method_display as recorded_display

#: Cost columns of the long table and their direction (True: higher is better).
COSTS: dict[str, bool] = {
    "train_seconds": False,
    "tokens_per_s": True,
    "peak_memory_bytes": False,
    "trainable_params": False,
    "effective_params": False,
}

TASK_ORDER = ["mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb"]
TASK_LABELS = {"sst2": "SST-2", "rte": "RTE", "mrpc": "MRPC", "cola": "CoLA", "stsb": "STS-B",
               "qnli": "QNLI", "qqp": "QQP", "mnli": "MNLI", "metamathqa": "MetaMathQA"}
MEMORY_KINDS = {"cuda_max_allocated": "CUDA max allocated", "cpu_max_rss": "CPU max RSS",
                "accelerator_memory_max": "accelerator max"}
METRIC_LABELS = {"accuracy": "Acc", "f1": "F1", "matthews": "Mcc", "pearson": "Pearson",
                 "spearman": "Spearman", "pearson_spearman": "Corr", "mse": "MSE", "loss": "Loss",
                 "forgetting": "Forgetting"}


def higher_is_better(name: str) -> bool:
    """Direction of a metric or cost column (``eval/accuracy``, ``best/loss``, ``train_seconds``…).

    Metrics registered in :data:`harness.metrics.METRICS` carry their own direction; losses, errors,
    times, memory and parameter counts are lower-is-better; anything else higher-is-better.
    """
    base = name.split("/")[-1]
    for prefix in ("test_", "valid_", "eval_"):
        base = base.removeprefix(prefix)
    if base in METRICS:
        return METRICS[base].higher_is_better
    if base in COSTS:
        return COSTS[base]
    if base == "pearson_spearman":
        return True
    lower = ("loss", "mse", "error", "perplexity", "seconds", "time", "memory", "bytes", "params", "forgetting")
    return not any(w in base for w in lower)


def arrow(name: str) -> str:
    """``↑`` when higher is better, else ``↓``."""
    return "↑" if higher_is_better(name) else "↓"


def method_display(method: Any, rows: Optional[pd.DataFrame] = None) -> dict[str, Any]:
    """How ``method`` is shown (:func:`harness.record.method_display`): what its runs recorded (the first
    recorded value of each key among ``rows`` of that method, when given), else as older records had it,
    else defaults (the name as label)."""
    recorded: dict[str, Any] = {}
    if rows is not None and "method" in rows:
        mine = rows[rows["method"].astype(str) == str(method)]
        for col in mine.columns:
            if col.startswith("method_") and mine[col].notna().any():
                recorded[col] = mine[col].dropna().iloc[0]
    return recorded_display(method, recorded)


def method_order_key(method: Any, rows: Optional[pd.DataFrame] = None) -> tuple[int, str]:
    """Sort key of a method in tables and legends: its recorded order, then its name."""
    return int(method_display(method, rows)["method_order"]), str(method)


def method_label(method: Any, budget: Any = None, variant: Any = "", *, label: Optional[str] = None,
                 rows: Optional[pd.DataFrame] = None) -> str:
    """``LoRA r=8``, ``AdaLoRA b=8``, ``Full FT`` (+ `` (variant)``). ``label``: the record's own
    ``method_label``; else :func:`method_display` (of ``rows`` when given)."""
    shown = method_display(method, rows)
    name = label if isinstance(label, str) and label else str(shown["method_label"])
    if budget is not None and not pd.isna(budget):
        name += f" {shown['method_budget_symbol']}={int(budget)}"
    if variant:
        name += f" ({variant})"
    return name


def task_label(task: Any) -> str:
    """``SST-2`` for ``sst2``; other names unchanged."""
    return TASK_LABELS.get(str(task).lower(), str(task))


def task_order_key(task: Any) -> tuple[int, str]:
    """GLUE tasks in the order of the AdaLoRA / LoRA papers' tables, other tasks after them, a-z."""
    t = str(task).lower()
    return (TASK_ORDER.index(t), t) if t in TASK_ORDER else (len(TASK_ORDER), t)


def metric_label(metric: str) -> str:
    """``Acc ↑`` for accuracy."""
    return f"{METRIC_LABELS.get(metric, metric)} {arrow(metric)}"
