"""Names for display and the direction of every column: methods, tasks, metrics, costs.

A method's display name comes from its run record (``method_label`` in run.json / summary.json, written by
the method itself); :data:`METHOD_LABELS` is the fallback for records written before that field existed.
"""

from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from harness.metrics import METRICS

#: Cost columns of the long table and their direction (True: higher is better).
COSTS: dict[str, bool] = {
    "train_seconds": False,
    "tokens_per_s": True,
    "peak_memory_bytes": False,
    "trainable_params": False,
    "effective_params": False,
}

#: Fallbacks for records without ``method_label``: display name, and the letter of the budget axis.
METHOD_LABELS = {"full": "Full FT", "lora": "LoRA", "dora": "DoRA", "adalora": "AdaLoRA"}
BUDGET_SYMBOL = {"adalora": "b"}
#: Rows of a table: these methods first, in this order (then the others a–z).
METHOD_ORDER = ["full", "lora", "dora", "adalora"]
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


def method_label(method: Any, budget: Any = None, variant: Any = "", *, label: Optional[str] = None) -> str:
    """``LoRA r=8``, ``AdaLoRA b=8``, ``Full FT`` (+ `` (variant)``). ``label``: the record's own
    ``method_label`` (else :data:`METHOD_LABELS`, else the name)."""
    has_label = isinstance(label, str) and label
    name = label if has_label else METHOD_LABELS.get(str(method), str(method))
    if budget is not None and not pd.isna(budget):
        name += f" {BUDGET_SYMBOL.get(str(method), 'r')}={int(budget)}"
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
