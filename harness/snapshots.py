"""Weight snapshots during training, with DoRA's ΔM/ΔD (PAPERS.md, Eqs. 3–4) computed on the device.

What ``<run>/snapshots/`` holds:

- ``w0.safetensors``: W0 — the pretrained weight — of every tracked matrix once, key = module name, shape
  (out, in): a hard link to the shared, content-addressed ``<store>/<sha256>.safetensors`` of
  :mod:`harness.w0store` (``snapshot.w0_store``; where links are refused, only referenced from meta.json), or a
  copy of its own with ``snapshot.w0_store=run``.
- ``step_<step>.safetensors`` per snapshot step (step 0 and the final step always), only what rebuilds the
  effective weight exactly: the tensors of the matrix's **form** (:mod:`harness.snapshot_format`; the method
  picks it, ``Method.snapshot_view``), e.g. ``A`` (r, in), ``B`` (out, r) for W0 + s·BA — r·(d+k) numbers per
  matrix, not d·k. A dense form (full fine-tuning): per-row and per-column summaries ``row_dm``/``row_dd``
  (out,), ``col_dm``/``col_dd`` (in,) — the signed change of each row's (column's) norm ‖w_n‖ − ‖w0_n‖ and its
  1 − cos(w_n, w0_n), 2·(d+k) numbers — and the full matrix ``W`` only for ``snapshot.full_weights`` at
  ``snapshot.full_steps``. Keys are ``<module>/<tensor>``.
- ``index.parquet``: one row per (step, matrix): layer, type, kind (the method), file, sha256 checksum, bytes,
  rank and the online summaries ``dM_row dD_row dM_col dD_col dW_fro dW_rel stable_rank``.
- ``meta.json``: the tracked matrices (shape, dtype, form, scale s), the schedule, the W0 file, its checksum and
  store path (docs/snapshots.md).

:func:`harness.snapshot_format.rebuild` is the one formula of the effective weight, used here on the device and by
``analysis.decomposition`` to rebuild weights from the files. This module names no method.

ΔM and ΔD are taken along both axes: per output row (the axis of DoRA's magnitude vector in PEFT and the
official code) and per input column. Every file is written to a temporary name and renamed, on a
background thread: the training thread only computes the summaries and copies the small tensors to the host.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from harness.config import SnapshotConfig
from harness.errors import ConfigError
from harness.families import MATRIX_TYPES, MatrixRef
from harness.methods.base import Method, SnapshotView
from harness.record import write_bytes_atomic, write_json_atomic
from harness.snapshot_format import (DENSE, DENSE_SUMMARY, FORMAT_VERSION, INDEX_FILE, META_FILE, POWER_BLOCK, STATS,
                                     get_form, rebuild, summarize)
from harness.tracking import MetricLogger
from harness.w0store import W0_FILE, checksum, link_into, publish, read_w0, resolve_store

log = logging.getLogger(__name__)

#: elements per chunk of stacked matrices in the batched summary pass (bounds the temporary memory)
CHUNK_ELEMENTS = 1 << 25


# ----------------------------------------------------------------------------------------------------------
# the schedule


def schedule_steps(cfg: SnapshotConfig, total_steps: int) -> list[int]:
    """Snapshot steps in 1..total_steps, sorted; the final step is always included (step 0 is implicit).

    ``checkpoints``: ``num`` evenly spaced checkpoints + final (num=3, T=2000 -> 500, 1000, 1500, 2000);
    ``every``: every ``every`` steps + final; ``steps``: the listed ones + final; ``log``: ``num``
    log-spaced steps between 1 and T + final.
    """
    T = total_steps
    if cfg.schedule == "checkpoints":
        steps = {max(1, round(T * i / (cfg.num + 1))) for i in range(1, cfg.num + 1)}
    elif cfg.schedule == "every":
        steps = set(range(cfg.every, T + 1, cfg.every))
    elif cfg.schedule == "steps":
        dropped = sorted(s for s in cfg.steps if s > T)
        if dropped:
            log.warning("snapshot.steps %s are past the run's %d steps; not taken", dropped, T)
        steps = {s for s in cfg.steps if 1 <= s <= T}
    elif cfg.schedule == "log":
        steps = {int(round(x)) for x in np.geomspace(1, T, cfg.num)}
    else:
        raise ConfigError(f"snapshot.schedule: unknown schedule '{cfg.schedule}'")
    steps.add(T)
    return sorted(s for s in steps if 1 <= s <= T)


# ----------------------------------------------------------------------------------------------------------
# tracked matrices of a live model


@dataclass
class Tracked:
    """One tracked matrix of the live model: its method's view of it (form, tensors, W0)."""

    ref: MatrixRef
    label: str
    kind: str  # the method's name (index and meta.json ``kind``)
    module: nn.Module  # the PEFT layer (adapters) or the Linear itself
    view: SnapshotView
    store_full: bool = False

    @property
    def adapter(self) -> Optional[str]:
        return self.view.adapter

    @property
    def base(self) -> nn.Linear:
        return self.view.base

    @property
    def form(self) -> str:
        return self.view.form

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.base.weight.shape)  # type: ignore[return-value]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The live tensors of this matrix's form (detached views; no copy)."""
        return self.view.tensors()

    def w0(self) -> torch.Tensor:
        """W0, the pretrained weight (out, in): a copy where the base weight trains, a view where it is frozen."""
        if self.view.pretrained is not None:
            return self.view.pretrained()
        w = self.base.weight.detach()
        return w.clone() if self.base.weight.requires_grad else w


def _matches(ref: MatrixRef, selectors: Iterable[str]) -> bool:
    return any(s == ref.type if s in MATRIX_TYPES else (ref.name == s or ref.name.endswith("." + s)) for s in selectors)


def select(targets: Sequence[MatrixRef], cfg: SnapshotConfig) -> list[MatrixRef]:
    """The adapted matrices that ``snapshot.types`` / ``snapshot.layers`` keep (ConfigError if none)."""
    refs = [r for r in targets if cfg.types is None or _matches(r, cfg.types)]
    if cfg.layers is not None:
        refs = [r for r in refs if r.layer in set(cfg.layers)]
    if not refs:
        raise ConfigError(
            f"snapshot.types/layers: {cfg.types}/{cfg.layers} keep none of the {len(targets)} adapted matrices "
            f"(types {sorted({r.type for r in targets})}, layers {sorted({r.layer for r in targets})})"
        )
    return refs


def _labels(refs: Sequence[MatrixRef]) -> dict[str, str]:
    """Short names ``Wq.0``; ``<type>.<layer>.<module>`` where a layer has several matrices of one type (no family
    in harness/families.py has any today)."""
    count: dict[tuple[str, int], int] = {}
    for r in refs:
        count[(r.type, r.layer)] = count.get((r.type, r.layer), 0) + 1
    return {r.name: f"{r.type}.{r.layer}" + (f".{r.name.rsplit('.', 1)[-1]}" if count[(r.type, r.layer)] > 1 else "")
            for r in refs}


def find_tracked(model: nn.Module, refs: Sequence[MatrixRef], method: Method,
                 full_weights: Sequence[str] = ()) -> list[Tracked]:
    """Locate each tracked matrix in a model (plain, or wrapped by PEFT: names gain a prefix) and ask ``method``
    how to read it."""
    modules = dict(model.named_modules())
    labels = _labels(refs)
    out = []
    for ref in refs:
        hits = [n for n in modules if n == ref.name or n.endswith("." + ref.name)]
        if not hits:
            raise ConfigError(f"snapshot: module '{ref.name}' not found in the model")
        module = modules[min(hits, key=len)]
        view = method.snapshot_view(module)
        get_form(view.form)  # a form this harness can rebuild
        out.append(Tracked(ref, labels[ref.name], method.name, module, view,
                           store_full=view.form == DENSE and _matches(ref, full_weights)))
    return out


# ----------------------------------------------------------------------------------------------------------
# files


def write_index_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """The index as parquet, through :func:`~harness.record.write_bytes_atomic`."""
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    write_bytes_atomic(path, buf.getvalue())


def step_file(step: int) -> str:
    """File name of a snapshot step."""
    return f"step_{step:08d}.safetensors"


def _to_cpu(tensors: dict[str, torch.Tensor], *, small: int = 1 << 20) -> dict[str, torch.Tensor]:
    """Copy device tensors to the host: the small ones (< ``small`` elements) in one transfer per dtype (one
    sync, not hundreds), the large ones (W0, full matrices) one by one (no device-side concatenated copy)."""
    out: dict[str, torch.Tensor] = {}
    by_dtype: dict[torch.dtype, list[str]] = {}
    for k, t in tensors.items():
        if t.numel() >= small or t.device.type == "cpu":
            out[k] = t.detach().to("cpu", copy=True).contiguous()
        else:
            by_dtype.setdefault(t.dtype, []).append(k)
    for dtype, keys in by_dtype.items():
        flat = torch.cat([tensors[k].reshape(-1) for k in keys]).cpu()
        for k, piece in zip(keys, torch.split(flat, [tensors[k].numel() for k in keys])):
            out[k] = piece.view(tensors[k].shape).clone()  # safetensors refuses tensors sharing storage
    return {k: out[k] for k in tensors}


# ----------------------------------------------------------------------------------------------------------
# the callback


@dataclass
class _Group:
    """Tracked matrices of one form, shape and dtype: stacked and summarised in one batched pass."""

    form: str
    items: list[Tracked] = field(default_factory=list)


class SnapshotCallback:
    """A :class:`harness.loop.Callback` writing ``<run>/snapshots`` at step 0, the scheduled steps and the end.

    On the training thread (blocking): summaries in float32 on the training device, one batched pass per
    group of same-shaped matrices, and one host transfer of the step's tensors and summaries. On one
    background thread (in order): safetensors serialisation, sha256, the atomic file write and the index,
    so that disk speed does not stall training. :meth:`wait` (called by ``on_train_end``) drains the
    writer and raises its first error: a snapshot that could not be written fails the run, never silently.
    """

    def __init__(self, cfg: SnapshotConfig, targets: Sequence[MatrixRef], out_dir: Path, *, total_steps: int,
                 method: Method) -> None:
        self.cfg = cfg
        self.refs = select(targets, cfg)
        self.out_dir = out_dir
        self.w0_store = resolve_store(cfg.w0_store, out_dir.parent)  # None: a W0 copy in this run
        self.total_steps = total_steps
        self.method = method
        self.steps = schedule_steps(cfg, total_steps)
        self._due = set(self.steps)
        self.full_steps = None if cfg.full_steps is None else set(cfg.full_steps) | {0}
        self.tracked: list[Tracked] = []
        self.groups: list[_Group] = []
        self.w0: dict[str, torch.Tensor] = {}  # on the device; a copy where the base trains, the frozen weight otherwise
        self.rows: list[dict[str, Any]] = []  # index rows, appended by the writer thread once a file is written
        self.taken: list[int] = []
        self.seconds: list[float] = []  # blocking time of each snapshot (step 0 without W0)
        self.w0_seconds = 0.0  # blocking time of W0 (device -> host)
        self.write_seconds = 0.0  # writer-thread time (serialise, hash, write, index), off the training thread
        self.bytes_written = 0
        self.meta: dict[str, Any] = {}
        self._writer: Optional[ThreadPoolExecutor] = None
        self._pending: list[Future[None]] = []
        self._resume: Optional[dict[str, Any]] = None  # set by load_state_dict: continue, don't start over

    # -- Callback protocol --------------------------------------------------------------------------------

    def on_train_start(self, model: nn.Module, logger: MetricLogger) -> None:
        t0 = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-writer")
        self.tracked = find_tracked(model, self.refs, self.method, self.cfg.full_weights)
        groups: dict[tuple[Any, ...], _Group] = {}
        for tr in self.tracked:
            self.w0[tr.ref.name] = tr.w0()
            key = (tr.form, tr.base.weight.dtype, tuple((k, tuple(t.shape)) for k, t in tr.tensors().items()))
            groups.setdefault(key, _Group(tr.form)).items.append(tr)
        self.groups = list(groups.values())
        self.meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method.name,
            "axes": {"row": "per output feature: torch weight row, DoRA's magnitude axis (PEFT, official code)",
                     "col": "per input feature: torch weight column"},
            "schedule": {"kind": self.cfg.schedule, "steps": [0, *self.steps], "total_steps": self.total_steps},
            "w0": {"file": W0_FILE, "checksum": None, "bytes": None, "store": None, "store_absolute": None},
            "matrices": [
                {"name": tr.ref.name, "label": tr.label, "layer": tr.ref.layer, "type": tr.ref.type, "kind": tr.kind,
                 "form": tr.form, "shape": list(tr.shape), "dtype": str(tr.base.weight.dtype).removeprefix("torch."),
                 "scale": tr.view.scale, "rank": tr.view.rank, "adapter": tr.view.adapter,
                 "tensors": list(DENSE_SUMMARY) + (["W"] if tr.store_full else []) if tr.form == DENSE
                 else list(get_form(tr.form).tensors)}
                for tr in self.tracked
            ],
            "stats": list(STATS),
            "complete": False,
        }
        if self._resume is not None:
            self._restore(self._resume)
            return
        host = _to_cpu(self.w0)
        self.w0_seconds = time.perf_counter() - t0
        self._submit(self._write_w0, host)
        log.info("snapshots: %d matrices (%s), steps %s, W0 %.1f MB", len(self.tracked),
                 ", ".join(sorted({tr.form for tr in self.tracked})), [0, *self.steps],
                 sum(t.numel() * t.element_size() for t in host.values()) / 1e6)
        self.snapshot(0, logger)

    def on_step(self, model: nn.Module, step: int, logger: MetricLogger) -> None:
        if step in self._due:
            self.snapshot(step, logger)

    def on_train_end(self, model: nn.Module, step: int, logger: MetricLogger) -> None:
        if step not in self.taken:
            self.snapshot(step, logger)
        self.meta["complete"] = True
        self.meta["taken"] = list(self.taken)
        self._submit(lambda: write_json_atomic(self.out_dir / META_FILE, self.meta))
        self.close()

    # -- the work -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def snapshot(self, step: int, logger: Optional[MetricLogger] = None) -> None:
        """Summaries of every tracked matrix now; its tensors and index rows are written in the background."""
        t0 = time.perf_counter()
        self._raise_failed()
        to_save: dict[str, torch.Tensor] = {}
        columns: list[torch.Tensor] = []  # per chunk (G, len(STATS) + 1): the summaries and the rank
        order: list[Tracked] = []
        for g in self.groups:
            per = max(1, CHUNK_ELEMENTS // math.prod(g.items[0].shape))
            for i in range(0, len(g.items), per):
                chunk = g.items[i : i + per]
                live = [tr.tensors() for tr in chunk]
                w0 = torch.stack([self.w0[tr.ref.name] for tr in chunk]).float()
                stacked = {k: torch.stack([t[k] for t in live]).float() for k in live[0]}
                form = get_form(g.form)
                scale = torch.tensor([tr.view.scale for tr in chunk], device=w0.device).view(-1, 1, 1)
                low_rank = form.rank_factor > 0 and all(
                    form.rank_factor * (tr.view.rank or 0) <= POWER_BLOCK for tr in chunk)
                stats, vectors = summarize(w0, rebuild(g.form, w0, stacked, scale), low_rank=low_rank)
                if form.kept_rank is not None:  # the kept rank: non-zero entries of that tensor
                    rank = torch.count_nonzero(stacked[form.kept_rank].flatten(1), dim=1).float()
                else:
                    rank = torch.tensor([math.nan if tr.view.rank is None else tr.view.rank for tr in chunk],
                                        device=w0.device)
                columns.append(torch.cat([stats, rank.unsqueeze(1)], dim=1))
                order.extend(chunk)
                for j, (tr, t) in enumerate(zip(chunk, live)):
                    if g.form != DENSE:
                        to_save.update({f"{tr.ref.name}/{k}": t[k] for k in form.tensors})
                        continue
                    to_save.update({f"{tr.ref.name}/{k}": vectors[k][j] for k in DENSE_SUMMARY})
                    if tr.store_full and (self.full_steps is None or step in self.full_steps):
                        to_save[f"{tr.ref.name}/W"] = t["W"]
        host = _to_cpu({**to_save, "__stats__": torch.cat(columns)})  # one sync for the whole snapshot
        table = host.pop("__stats__").double().numpy()
        payload: dict[str, int] = {}
        for k, t in host.items():
            name = k.rsplit("/", 1)[0]
            payload[name] = payload.get(name, 0) + t.numel() * t.element_size()
        fname = step_file(step)
        rows, metrics = [], {}
        for tr, row in zip(order, table):
            values = dict(zip(STATS, map(float, row[:-1])))
            rows.append({
                "step": step, "matrix": tr.ref.name, "label": tr.label, "layer": tr.ref.layer, "type": tr.ref.type,
                "kind": tr.kind, "file": fname, "checksum": None, "bytes": None, "tensor_bytes": payload[tr.ref.name],
                "rank": None if math.isnan(row[-1]) else int(row[-1]), **values,
            })
            if self.cfg.log_metrics:
                metrics.update({f"snapshot/{tr.label}/{k}": v for k, v in values.items()})
        self._submit(self._write_step, fname, host, rows, step)
        elapsed = time.perf_counter() - t0
        self.taken.append(step)
        self.seconds.append(elapsed)
        if logger is not None:
            metrics["perf/snapshot_ms"] = elapsed * 1e3
            logger.log(metrics, step)
        log.debug("snapshot at step %d: %d matrices, %.1f ms on the training thread", step, len(order), elapsed * 1e3)

    # -- the writer thread --------------------------------------------------------------------------------

    def _submit(self, fn: Any, *args: Any) -> None:
        if self._writer is None:
            raise RuntimeError("SnapshotCallback: on_train_start was not called")

        def timed() -> None:
            t0 = time.perf_counter()
            try:
                fn(*args)
            finally:
                self.write_seconds += time.perf_counter() - t0

        self._pending.append(self._writer.submit(timed))

    def _write_file(self, fname: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, int]:
        data = st_save(tensors, metadata=metadata)
        digest = checksum(data)
        write_bytes_atomic(self.out_dir / fname, data)
        self.bytes_written += len(data)
        return digest, len(data)

    def _write_w0(self, host: dict[str, torch.Tensor]) -> None:
        """W0 into the run (``snapshot.w0_store=run``), or once into the store, hard-linked into the run."""
        if self.w0_store is None:
            digest, n = self._write_file(W0_FILE, host, {"format": "pt"})
            self.meta["w0"].update(checksum=digest, bytes=n)
        else:
            data = st_save(host, metadata={"format": "pt"})
            digest, n = checksum(data), len(data)
            path, written = publish(self.w0_store, data, digest)
            self.bytes_written += n if written else 0
            linked = link_into(path, self.out_dir / W0_FILE)
            self.meta["w0"].update(file=W0_FILE if linked else None, checksum=digest, bytes=n,
                                   store=os.path.relpath(path, os.path.abspath(self.out_dir)), store_absolute=str(path))
            log.info("snapshots: W0 %s %s%s", "written to" if written else "reused from", path,
                     ", hard-linked into the run" if linked else "")
        write_json_atomic(self.out_dir / META_FILE, self.meta)

    def _write_step(self, fname: str, host: dict[str, torch.Tensor], rows: list[dict[str, Any]], step: int) -> None:
        # one metadata key: safetensors writes a dict of several in random order, so equal tensors would give
        # files with different checksums; the step is in the file name and the index
        digest, n = self._write_file(fname, host, {"format": "pt"})
        for r in rows:
            r.update(checksum=digest, bytes=n)
        self.rows.extend(rows)
        write_index_atomic(self.out_dir / INDEX_FILE, self.rows)

    def _raise_failed(self) -> None:
        """Re-raise the first error of a finished write (a full disk stops the run at the next snapshot)."""
        still = []
        for f in self._pending:
            if f.done():
                f.result()
            else:
                still.append(f)
        self._pending = still

    def wait(self) -> None:
        """Block until every file is written; raise the writer's first error."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        """Drain the writer (raising its first error) and stop its thread."""
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    # -- resume (checkpoints of harness.loop) ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the index rows and steps written so far (after draining the writer)."""
        self.wait()
        return {"rows": [dict(r) for r in self.rows], "taken": list(self.taken), "seconds": list(self.seconds),
                "w0_seconds": self.w0_seconds, "write_seconds": self.write_seconds,
                "bytes_written": self.bytes_written, "w0": dict(self.meta["w0"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` at ``on_train_start`` instead of starting over."""
        self._resume = state

    def _restore(self, state: dict[str, Any]) -> None:
        """Files and index back to the checkpoint: later steps' files (and half-written temporaries) removed,
        the index rewritten to the checkpoint's rows, a W0 that is a copy read back from its (checksummed) file."""
        self._resume = None
        self.rows = [dict(r) for r in state["rows"]]
        self.taken, self.seconds = list(state["taken"]), list(state["seconds"])
        self.w0_seconds, self.write_seconds = state["w0_seconds"], state["write_seconds"]
        self.bytes_written = state["bytes_written"]
        self.meta["w0"] = dict(state["w0"])
        keep = {step_file(s) for s in self.taken}
        for f in self.out_dir.glob("step_*.safetensors"):
            if f.name not in keep:
                f.unlink()
        for f in self.out_dir.glob(".*.tmp*"):
            f.unlink()
        # W0 that is no view of a frozen weight (a trained base, or a pretrained weight the method rewrote)
        full = [tr for tr in self.tracked if tr.base.weight.requires_grad or tr.view.pretrained is not None]
        if full:
            try:
                _, data = read_w0(self.meta["w0"], self.out_dir)
            except FileNotFoundError as e:
                raise RuntimeError(f"{e}; cannot resume this run's snapshots (train.resume=never)") from None
            w0 = st_load(data)
            for tr in full:
                self.w0[tr.ref.name] = w0[tr.ref.name].to(tr.base.weight.device, tr.base.weight.dtype)
        write_index_atomic(self.out_dir / INDEX_FILE, self.rows)
        write_json_atomic(self.out_dir / META_FILE, self.meta)
        log.info("snapshots: resumed after step %d (steps %s on disk)", max(self.taken), self.taken)

    def summary(self) -> dict[str, Any]:
        """Entries for the run's summary.json: what was snapshotted and what it cost."""
        return {
            "snapshot/matrices": len(self.tracked),
            "snapshot/steps": list(self.taken),
            "snapshot/bytes": self.bytes_written,
            "snapshot/blocking_seconds": float(sum(self.seconds)) + self.w0_seconds,
            "snapshot/writer_seconds": self.write_seconds,
            "snapshot/ms_mean": float(np.mean(self.seconds) * 1e3) if self.seconds else None,
        }
