"""Training checkpoints: ``<run>/checkpoints/step_<step>/`` = ``tensors.safetensors`` + ``state.json``.

A checkpoint is a tree of plain values (dicts, lists, tuples, numbers, strings, tensors, numpy arrays).
Tensors go into one safetensors file; everything else into JSON, where a tensor is a reference
``{"__tensor__": key}`` (tuples, numpy arrays and dicts with non-string keys have similar markers). No
pickle anywhere: loading can run no code. JSON writes floats with ``repr``, which reads back bit-exactly.

Writes cannot half-happen: the folder is assembled under a temporary name (files fsynced), renamed into
place, and only then are older checkpoints removed, so the latest complete checkpoint always survives a
kill or a full disk. Removal goes through :func:`harness.run_folder.remove_entry` (never through a link), and a
``checkpoints`` that is not a real folder of the run (a link) is neither written nor pruned. ``state.json`` holds the sha256 of the tensor file; a checkpoint whose file does not
match is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from harness.run_folder import remove_entry

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIR = "checkpoints"
TENSORS = "tensors.safetensors"
STATE = "state.json"
_MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__")


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step ``step``."""
    return f"step_{step:08d}"


# ----------------------------------------------------------------------------------------------------------
# the codec: a tree of plain values <-> (JSON-able tree, flat dict of tensors)


def encode(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """The JSON-able form of ``obj``; its tensors (detached CPU copies) are added to ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = path or f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = path or f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64) if obj.dtype.kind in "ui"
                                        else np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: encode(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {"__dict__": [[encode(k, tensors, f"{path}/k{i}"), encode(v, tensors, f"{path}/{i}")]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__} at '{path or '/'}'")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {decode(k, tensors): decode(v, tensors) for k, v in obj["__dict__"]}
    return {k: decode(v, tensors) for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------------------
# files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class Saved:
    """What one checkpoint cost."""

    path: Path
    bytes: int
    seconds: float


def save(run_dir: Path, step: int, tree: dict[str, Any]) -> Saved:
    """Write the checkpoint of ``step`` atomically and remove older ones; returns its size and time."""
    t0 = time.perf_counter()
    root = Path(run_dir) / DIR
    root.mkdir(parents=True, exist_ok=True)
    if root.is_symlink():
        raise OSError(f"{root}: a link, not a folder of the run; checkpoints are not written through it")
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}.{os.getpid()}"
    here = Path(DIR)
    tensors: dict[str, torch.Tensor] = {}
    state = encode(tree, tensors)
    blob = st_save(tensors, metadata={"format": "pt", "step": str(step)})
    doc = {"format_version": FORMAT_VERSION, "step": step, "created": time.time(),
           "tensors": {"file": TENSORS, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
           "state": state}
    try:
        remove_entry(run_dir, here / tmp.name)
        tmp.mkdir()
        _write(tmp / TENSORS, blob)
        _write(tmp / STATE, json.dumps(doc).encode())
        _fsync_dir(tmp)
        remove_entry(run_dir, here / final.name)  # the same step again (a resumed run re-reaching it)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        _remove_quietly(run_dir, here / tmp.name)
        raise
    for old in root.iterdir():  # keep only the latest (and never touch the one just written)
        if old != final and (old.name.startswith("step_") or old.name.startswith(".tmp_")):
            _remove_quietly(run_dir, here / old.name)
    return Saved(final, len(blob), time.perf_counter() - t0)


def _remove_quietly(run_dir: Path, rel: Path) -> None:
    """:func:`remove_entry`, a failure logged (a leftover of ours is reclaimed by the next run)."""
    try:
        remove_entry(run_dir, rel)
    except OSError as e:
        log.warning("%s: not removed (%s)", Path(run_dir) / rel, e)


@dataclass
class Loaded:
    """A checkpoint read back: the step it was taken after and its tree."""

    step: int
    tree: dict[str, Any]
    path: Path


def read(folder: Path) -> Loaded:
    """The checkpoint in ``folder`` (ValueError when its tensor file does not match its checksum)."""
    doc = json.loads((folder / STATE).read_text())
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version {doc.get('format_version')} (this harness reads {FORMAT_VERSION})")
    blob = (folder / doc["tensors"]["file"]).read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc["tensors"]["sha256"]:
        raise ValueError(f"{doc['tensors']['file']}: checksum mismatch (file corrupt or truncated)")
    return Loaded(int(doc["step"]), decode(doc["state"], st_load(blob)), folder)


def latest(run_dir: Path) -> Optional[Loaded]:
    """The newest readable checkpoint of a run folder (None when there is none); bad ones are reported."""
    root = Path(run_dir) / DIR
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if p.name.startswith("step_")), reverse=True):
        try:
            return read(folder)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            log.warning("%s: unusable checkpoint (%s); trying an older one", folder, e)
    return None


def exists(run_dir: Path) -> bool:
    """Whether the run folder holds a checkpoint folder (not checked for readability)."""
    root = Path(run_dir) / DIR
    return root.is_dir() and any(p.name.startswith("step_") for p in root.iterdir())


def remove(run_dir: Path) -> None:
    """Delete every checkpoint of a run folder (a finished run does not need them); a link there is removed as
    a link."""
    _remove_quietly(Path(run_dir), Path(DIR))


# ----------------------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) RNG states."""
    import random

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
