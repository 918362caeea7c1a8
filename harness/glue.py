"""The five small GLUE tasks and where their data comes from: a GLUE folder (``task.glue_dir``, else
``$GLUE_DIR``) laid out as GLUE's download script makes it, else HF ``datasets`` when the hub can be reached.

No torch, pandas or ``datasets`` here: the CLI asks :func:`source_problem` before it imports them
(:mod:`harness.preflight`), so that a command without data fails in about a second instead of after the
imports; :mod:`harness.tasks` reads the data with the same rules and messages.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class TaskSpec:
    """How to read one GLUE task and score it."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    columns: Optional[tuple[str, ...]]  # for files without a header line
    labels: Optional[tuple[str, ...]]  # label strings in id order; None for regression
    metrics: tuple[str, ...]
    main_metric: str
    hf_config: str
    hf_text_columns: tuple[str, ...]

    @property
    def problem(self) -> str:
        return "regression" if self.labels is None else "classification"

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


GLUE: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), "label", None, ("0", "1"), ("accuracy",), "accuracy",
                     "sst2", ("sentence",)),
    "rte": TaskSpec("rte", "RTE", ("sentence1", "sentence2"), "label", None, ("entailment", "not_entailment"),
                    ("accuracy",), "accuracy", "rte", ("sentence1", "sentence2")),
    "mrpc": TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", None, ("0", "1"),
                     ("accuracy", "f1"), "accuracy", "mrpc", ("sentence1", "sentence2")),
    "cola": TaskSpec("cola", "CoLA", ("sentence",), "label", ("source", "label", "original_label", "sentence"),
                     ("0", "1"), ("matthews",), "matthews", "cola", ("sentence",)),
    "stsb": TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, None,
                     ("pearson", "spearman"), "pearson_spearman", "stsb", ("sentence1", "sentence2")),
}

#: how long the HF hub may take to accept a TCP connection before the harness calls it unreachable (seconds)
HUB_TIMEOUT = 1.0
#: the environment variables under which HF libraries stay offline
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
#: how to make a GLUE folder (the end of every message about a missing one)
HOW_TO_MAKE = ("(python download_glue_data.py --data_dir <dir> --tasks all; here GLUE_DIR=../shared/data/glue)")


def glue_dir(cfg: Any) -> Optional[Path]:
    """``task.glue_dir``, else ``$GLUE_DIR``, else None (``cfg``: a TaskConfig or a composed ``task`` node)."""
    d = cfg.glue_dir or os.environ.get("GLUE_DIR")
    return Path(d).expanduser() if d else None


def hub_unreachable(timeout: float = HUB_TIMEOUT) -> Optional[str]:
    """Why the HF hub cannot be used now, or None when it can: an offline variable set (``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE`` = 1, true, yes or on), or no TCP connection to the hub (``$HF_ENDPOINT``, default
    huggingface.co, port 443) within ``timeout`` seconds. Asked before HF ``datasets``, which retries for about
    25 s before failing offline."""
    import socket
    from urllib.parse import urlsplit

    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]}"
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} unreachable: {type(e).__name__}"
    return None


def no_glue_message(spec: TaskSpec, why: str) -> str:
    """One line: no GLUE folder and why the hub fallback cannot serve; how to make the folder."""
    return (f"task {spec.name}: no GLUE folder given and {why}; set GLUE_DIR (or task.glue_dir) to a folder laid "
            f"out as GLUE's download script makes it: <dir>/{spec.folder}/train.tsv and <dir>/{spec.folder}/dev.tsv "
            f"{HOW_TO_MAKE}")


def missing_folder_message(root: Path, folder: str) -> str:
    """One line: the GLUE folder given does not exist; how to make one."""
    return (f"{root}: GLUE folder not found (from task.glue_dir or $GLUE_DIR); point it at a folder holding "
            f"{folder}/train.tsv and {folder}/dev.tsv, laid out as GLUE's download script makes it {HOW_TO_MAKE}")


def datasets_installed() -> bool:
    """HF ``datasets`` can be imported (asked without importing it)."""
    if "datasets" in sys.modules:
        return sys.modules["datasets"] is not None
    try:
        return importlib.util.find_spec("datasets") is not None
    except (ImportError, ValueError):
        return False


def hub_problem(spec: TaskSpec) -> Optional[str]:
    """Why ``spec`` cannot be read from HF ``datasets`` now (:func:`no_glue_message`), or None when it may be."""
    if not datasets_installed():
        return no_glue_message(spec, "HF datasets is not installed (pip install -e '.[hf]', when online)")
    why = hub_unreachable()
    return None if why is None else no_glue_message(spec, f"the HF hub is offline ({why})")


def source_problem(task: Any) -> Optional[str]:
    """For a GLUE task (``task``: a TaskConfig or a composed ``task`` node), the one-line reason its data cannot
    be found: the GLUE folder given does not exist, or none is given and HF ``datasets`` cannot serve it. None
    when the data may be there, and for every other kind of task (custom files, GLUE-like folders, reasoning-gym:
    :func:`harness.tasks.load_task` checks those)."""
    if task.rg is not None or task.folder is not None or task.train_file or task.name not in GLUE:
        return None
    spec = GLUE[task.name]
    root = glue_dir(task)
    if root is not None:
        return None if root.is_dir() else missing_folder_message(root, spec.folder)
    return hub_problem(spec)
