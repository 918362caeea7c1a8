"""Weight snapshots during training, with DoRA's ΔM/ΔD (PAPERS.md, Eqs. 3–4) computed on the device.

What ``<run>/snapshots/`` holds:

- ``w0.safetensors``: W0 of every tracked matrix once, key = module name, shape (out, in): a hard link to the
  shared, content-addressed ``<store>/<sha256>.safetensors`` of :mod:`harness.w0store` (``snapshot.w0_store``;
  where links are refused, only referenced from meta.json), or a copy of its own with ``snapshot.w0_store=run``.
- ``step_<step>.safetensors`` per snapshot step (step 0 and the final step always), only what rebuilds the
  merged weight exactly: LoRA ``A`` (r, in), ``B`` (out, r); DoRA ``m`` (out,), ``A``, ``B``; AdaLoRA
  ``A`` (r, in), ``E`` (r, 1), ``B`` (out, r) — r·(d+k) numbers per matrix, not d·k. Full fine-tuning:
  per-row and per-column summaries ``row_dm``/``row_dd`` (out,), ``col_dm``/``col_dd`` (in,) — the signed
  change of each row's (column's) norm ‖w_n‖ − ‖w0_n‖ and its 1 − cos(w_n, w0_n), 2·(d+k) numbers — and the
  full matrix ``W`` only for ``snapshot.full_weights`` at ``snapshot.full_steps``. Keys are ``<module>/<tensor>``.
- ``index.parquet``: one row per (step, matrix): layer, type, kind, file, sha256 checksum, bytes, rank and the
  online summaries ``dM_row dD_row dM_col dD_col dW_fro dW_rel stable_rank``.
- ``meta.json``: the tracked matrices (shape, dtype, scale s), the schedule, the W0 file, its checksum and
  store path (docs/snapshots.md).

The merged weight of step t (torch layout, W0 (out, in)):
LoRA W0 + s·BA; DoRA m ⊙ V/||V||_row with V = W0 + s·BA; AdaLoRA W0 + s·B(A ⊙ E) with PEFT's
s = lora_alpha/(ranknum + 1e-5); full FT the weight itself. :func:`merged_weight` is the one formula,
used here on the device and by ``analysis.decomposition`` to rebuild weights from the files.

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
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from harness.config import SnapshotConfig
from harness.errors import ConfigError
from harness.families import MATRIX_TYPES, MatrixRef
from harness.run_record import write_bytes_atomic, write_json_atomic
from harness.tracking import MetricLogger
from harness.w0store import W0_FILE, checksum, link_into, publish, read_w0, resolve_store

log = logging.getLogger(__name__)

#: 2: W0 may live in the shared store (meta.json ``w0.store``); 1: a copy in each run
FORMAT_VERSION = 2
#: the per-matrix summaries, in the order of :func:`summarize`'s ``stats`` columns
STATS: tuple[str, ...] = ("dM_row", "dD_row", "dM_col", "dD_col", "dW_fro", "dW_rel", "stable_rank")
#: tensors stored per snapshot step for each kind of matrix (full FT: see ``FULL_SUMMARY``)
FACTORS: dict[str, tuple[str, ...]] = {"lora": ("A", "B"), "dora": ("m", "A", "B"), "adalora": ("A", "E", "B")}
FULL_SUMMARY: tuple[str, ...] = ("row_dm", "row_dd", "col_dm", "col_dd")
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
#: elements per chunk of stacked matrices in the batched summary pass (bounds the temporary memory)
CHUNK_ELEMENTS = 1 << 25
POWER_BLOCK = 16
POWER_ITERS = 8


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
# the math: one merged-weight formula and one batched summary pass


def merged_weight(kind: str, w0: torch.Tensor, t: Mapping[str, torch.Tensor],
                  scale: float | torch.Tensor) -> torch.Tensor:
    """The merged weight (..., out, in) from W0 (..., out, in) and a step's tensors (leading dims batch).

    ``t``: LoRA/DoRA ``A`` (..., r, in), ``B`` (..., out, r), DoRA ``m`` (..., out); AdaLoRA ``E`` (..., r, 1);
    full FT ``W`` (..., out, in). ``scale`` is s (AdaLoRA: lora_alpha / (ranknum + 1e-5)), a float or a
    tensor broadcasting against (..., out, in), e.g. (G, 1, 1) for a stack.
    """
    if kind == "full":
        return t["W"]
    if kind == "adalora":
        delta = (t["B"] @ (t["A"] * t["E"])) * scale
    elif kind in ("lora", "dora"):
        delta = (t["B"] @ t["A"]) * scale
    else:
        raise ValueError(f"unknown matrix kind '{kind}'")
    v = w0 + delta
    if kind == "dora":
        v = (t["m"] / torch.linalg.norm(v, dim=-1)).unsqueeze(-1) * v
    return v


def spectral_norm(delta: torch.Tensor, *, iters: int = POWER_ITERS, block: int = POWER_BLOCK,
                  seed: int = 0) -> torch.Tensor:
    """Largest singular value of each matrix of ``delta`` (G, out, in) -> (G,), by subspace iteration.

    Exact (to rounding) when rank(ΔW) ≤ ``block`` (LoRA, and AdaLoRA up to r = 16); otherwise a lower bound
    that converges like (σ_{block+1}/σ_1)^(2·iters). Uses its own generator: the training RNG is untouched.
    A matrix with non-finite entries (a diverged run) gets NaN, never an error: the loop reports divergence.
    """
    G, out, inp = delta.shape
    k = min(block, out, inp)
    finite = torch.isfinite(delta).all(dim=-1).all(dim=-1)  # (G,)
    delta = torch.where(finite.view(-1, 1, 1), delta, torch.zeros((), dtype=delta.dtype, device=delta.device))
    gen = torch.Generator(device=delta.device).manual_seed(seed)
    q = torch.randn(G, inp, k, generator=gen, device=delta.device, dtype=delta.dtype)
    for _ in range(iters):
        q = torch.linalg.qr(delta @ q).Q
        q = torch.linalg.qr(delta.mT @ q).Q
    sigma = torch.linalg.svdvals(delta @ q)[..., 0]
    return torch.where(finite, sigma, torch.full_like(sigma, math.nan))


def summarize(w0: torch.Tensor, w: torch.Tensor, *,
              low_rank: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ΔM/ΔD along rows and columns, ‖ΔW‖_F, ‖ΔW‖_F/‖W0‖_F and stable rank, for a stack of matrices.

    w0, w: (G, out, in), same dtype (float32 online, float64 offline). Returns ``stats`` (G, 7) in the order
    of :data:`STATS` and the per-row/per-column vectors ``row_dm``/``row_dd`` (G, out), ``col_dm``/``col_dd``
    (G, in): the signed change of each row's (column's) norm and its 1 − cos.
    ΔM = mean_n |‖w_n‖ − ‖w0_n‖|, ΔD = mean_n (1 − cos(w_n, w0_n)); stable rank = ‖ΔW‖_F²/‖ΔW‖_2² (0 when
    ΔW = 0). Neither loses precision to cancellation when W barely moved: ‖w_n‖ − ‖w0_n‖ is taken as
    (2·w0_n + Δ_n)·Δ_n / (‖w_n‖ + ‖w0_n‖) with Δ = w − w0, and 1 − cos as ½‖w_n/‖w_n‖ − w0_n/‖w0_n‖‖²
    (exact also where the magnitude moved much more than the direction, DoRA's case). ``low_rank``:
    rank(ΔW) ≤ :data:`POWER_BLOCK` is known (LoRA, AdaLoRA), so one subspace iteration gives σ_max exactly.
    """
    tiny = torch.finfo(w.dtype).tiny
    delta = w - w0
    grow = (2 * w0 + delta) * delta  # ‖w‖² − ‖w0‖², element by element
    out = {}
    for axis, dim in (("row", -1), ("col", -2)):
        n0, n = torch.linalg.norm(w0, dim=dim, keepdim=True), torch.linalg.norm(w, dim=dim, keepdim=True)
        dm = grow.sum(dim, keepdim=True) / (n + n0).clamp_min(tiny)
        u = w / n.clamp_min(tiny) - w0 / n0.clamp_min(tiny)
        out[f"{axis}_dm"], out[f"{axis}_dd"] = dm.squeeze(dim), 0.5 * (u * u).sum(dim)
    fro = torch.linalg.norm(delta, dim=(-2, -1))
    rel = fro / torch.linalg.norm(w0, dim=(-2, -1)).clamp_min(tiny)
    sigma = spectral_norm(delta, iters=1 if low_rank else POWER_ITERS)
    stable = torch.where(fro == 0, torch.zeros_like(fro), fro**2 / sigma.clamp_min(tiny) ** 2)  # NaN stays NaN
    stats = torch.stack([out["row_dm"].abs().mean(-1), out["row_dd"].mean(-1), out["col_dm"].abs().mean(-1),
                         out["col_dd"].mean(-1), fro, rel, stable], dim=-1)
    return stats, out


# ----------------------------------------------------------------------------------------------------------
# tracked matrices of a live model


@dataclass
class Tracked:
    """One tracked matrix of the live model: where its W0 and its method's tensors are."""

    ref: MatrixRef
    label: str
    kind: str  # full | lora | dora | adalora
    base: nn.Linear  # holds W0 (adapters, frozen) or the trained weight (full FT)
    module: nn.Module  # the PEFT layer (adapters) or ``base`` (full FT)
    adapter: Optional[str]
    scale: float
    rank: Optional[int]  # r (AdaLoRA: init_r); None for full FT
    store_full: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.base.weight.shape)  # type: ignore[return-value]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The live method tensors of this matrix (detached views; no copy)."""
        a = self.adapter
        m = self.module
        if self.kind == "lora":
            return {"A": m.lora_A[a].weight.detach(), "B": m.lora_B[a].weight.detach()}
        if self.kind == "dora":
            return {"m": m.lora_magnitude_vector[a].weight.detach(), "A": m.lora_A[a].weight.detach(),
                    "B": m.lora_B[a].weight.detach()}
        if self.kind == "adalora":
            return {"A": m.lora_A[a].detach(), "E": m.lora_E[a].detach(), "B": m.lora_B[a].detach()}
        return {"W": self.base.weight.detach()}


def _describe(module: nn.Module) -> tuple[str, nn.Linear, Optional[str], float, Optional[int]]:
    """(kind, base linear, adapter name, scale s, rank) of a tracked module of a (PEFT-wrapped) model."""
    from peft.tuners.adalora import AdaLoraLayer
    from peft.tuners.lora import LoraLayer

    if isinstance(module, LoraLayer):
        if getattr(module, "fan_in_fan_out", False):
            raise ConfigError("snapshot: fan_in_fan_out layers (GPT-2 Conv1D) are not supported")
        adapter = module.active_adapters[0]
        base = module.get_base_layer()
        if isinstance(module, AdaLoraLayer):
            ranknum = float(module.ranknum[adapter].item())
            return "adalora", base, adapter, float(module.scaling[adapter]) / (ranknum + 1e-5), int(module.r[adapter])
        kind = "dora" if adapter in getattr(module, "lora_magnitude_vector", {}) else "lora"
        return kind, base, adapter, float(module.scaling[adapter]), int(module.r[adapter])
    if isinstance(module, nn.Linear):
        return "full", module, None, 1.0, None
    raise ConfigError(f"snapshot: cannot snapshot a {type(module).__name__} (expected nn.Linear or a PEFT layer)")


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
    """Short names ``Wq.0``; ``Wf1.0.gate_proj`` where a layer has several matrices of one type (Llama)."""
    count: dict[tuple[str, int], int] = {}
    for r in refs:
        count[(r.type, r.layer)] = count.get((r.type, r.layer), 0) + 1
    return {r.name: f"{r.type}.{r.layer}" + (f".{r.name.rsplit('.', 1)[-1]}" if count[(r.type, r.layer)] > 1 else "")
            for r in refs}


def find_tracked(model: nn.Module, refs: Sequence[MatrixRef], full_weights: Sequence[str] = ()) -> list[Tracked]:
    """Locate each tracked matrix in a model (plain, or wrapped by PEFT: names gain a prefix)."""
    modules = dict(model.named_modules())
    labels = _labels(refs)
    out = []
    for ref in refs:
        hits = [n for n in modules if n == ref.name or n.endswith("." + ref.name)]
        if not hits:
            raise ConfigError(f"snapshot: module '{ref.name}' not found in the model")
        module = modules[min(hits, key=len)]
        kind, base, adapter, scale, rank = _describe(module)
        out.append(Tracked(ref, labels[ref.name], kind, base, module, adapter, scale, rank,
                           store_full=kind == "full" and _matches(ref, full_weights)))
    return out


# ----------------------------------------------------------------------------------------------------------
# files


def write_index_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """The index as parquet, through :func:`~harness.run_record.write_bytes_atomic`."""
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
    """Tracked matrices of one kind, shape and dtype: stacked and summarised in one batched pass."""

    kind: str
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
                 method: str = "") -> None:
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
        self.w0: dict[str, torch.Tensor] = {}  # on the device; a copy for full FT, the frozen weight otherwise
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
        self.tracked = find_tracked(model, self.refs, self.cfg.full_weights)
        groups: dict[tuple[Any, ...], _Group] = {}
        for tr in self.tracked:
            w = tr.base.weight.detach()
            self.w0[tr.ref.name] = w.clone() if tr.kind == "full" else w
            key = (tr.kind, w.dtype, tuple((k, tuple(t.shape)) for k, t in tr.tensors().items()))
            groups.setdefault(key, _Group(tr.kind)).items.append(tr)
        self.groups = list(groups.values())
        self.meta = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "axes": {"row": "per output feature: torch weight row, DoRA's magnitude axis (PEFT, official code)",
                     "col": "per input feature: torch weight column"},
            "schedule": {"kind": self.cfg.schedule, "steps": [0, *self.steps], "total_steps": self.total_steps},
            "w0": {"file": W0_FILE, "checksum": None, "bytes": None, "store": None, "store_absolute": None},
            "matrices": [
                {"name": tr.ref.name, "label": tr.label, "layer": tr.ref.layer, "type": tr.ref.type, "kind": tr.kind,
                 "shape": list(tr.shape), "dtype": str(tr.base.weight.dtype).removeprefix("torch."),
                 "scale": tr.scale, "rank": tr.rank, "adapter": tr.adapter,
                 "tensors": list(FACTORS.get(tr.kind, FULL_SUMMARY)) + (["W"] if tr.store_full else [])}
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
                 ", ".join(sorted({tr.kind for tr in self.tracked})), [0, *self.steps],
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
                scale = torch.tensor([tr.scale for tr in chunk], device=w0.device).view(-1, 1, 1)
                low_rank = g.kind in ("lora", "adalora") and all((tr.rank or 0) <= POWER_BLOCK for tr in chunk)
                stats, vectors = summarize(w0, merged_weight(g.kind, w0, stacked, scale), low_rank=low_rank)
                if g.kind == "adalora":  # the kept rank: non-zero entries of E
                    rank = torch.count_nonzero(stacked["E"].flatten(1), dim=1).float()
                else:
                    rank = torch.tensor([math.nan if tr.rank is None else tr.rank for tr in chunk], device=w0.device)
                columns.append(torch.cat([stats, rank.unsqueeze(1)], dim=1))
                order.extend(chunk)
                for j, (tr, t) in enumerate(zip(chunk, live)):
                    if g.kind != "full":
                        to_save.update({f"{tr.ref.name}/{k}": t[k] for k in FACTORS[g.kind]})
                        continue
                    to_save.update({f"{tr.ref.name}/{k}": vectors[k][j] for k in FULL_SUMMARY})
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
        the index rewritten to the checkpoint's rows, full FT's W0 read back from its (checksummed) file."""
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
        full = [tr for tr in self.tracked if tr.kind == "full"]
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
