"""CUDA graphs of a whole training step, one per batch shape.

A small model's eager step on a GPU is launch-bound: the host issues hundreds of kernels (forward, backward,
fused AdamW) whose work takes less time than issuing them. :class:`StepGraphs` records the step once per
batch shape and replays it: one launch per step. The step function it is given must

- zero the gradients in place (``optimizer.zero_grad(set_to_none=False)``), then accumulate into them: the
  gradients are allocated once (by the first eager step) and every graph reads and writes those tensors;
- do nothing that reads a device value on the host (no ``.item()``, no data-dependent Python branch);
- return its outputs (losses, gradient norm) as tensors: after a replay they hold that step's values.

A shape is run eagerly (on a side stream, as ``torch.cuda.graphs`` asks) the first ``warmup`` times it is seen,
then captured; the capture records without executing, so the step it was captured for is replayed right after:
every step is a real step, none is repeated or skipped. Graphs share one memory pool (their intermediates
are dead between replays); a shape beyond ``max_graphs`` runs eagerly. Dropout under a graph draws from the
CUDA generator's Philox stream as eager code does, advanced per replay: a graphed run is not bit-identical
to an eager one with dropout (it is without).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
StepFn = Callable[[Batch], dict[str, torch.Tensor]]


def shape_key(batch: Batch) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """What makes two batches need different graphs: their tensors' names and shapes."""
    return tuple((k, tuple(v.shape)) for k, v in sorted(batch.items()))


class StepGraphs:
    """Run ``fn`` on CPU batches, replaying one CUDA graph per batch shape once the shape has been seen
    ``warmup`` times. ``capture_seconds`` is the time spent capturing (and, per shape, synchronising)."""

    def __init__(self, fn: StepFn, device: torch.device, *, warmup: int = 2, max_graphs: int = 16) -> None:
        self.fn, self.device, self.warmup, self.max_graphs = fn, device, warmup, max_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Batch, dict[str, torch.Tensor]]] = {}
        self._seen: dict[tuple, int] = {}
        self._pool: Optional[tuple[int, int]] = None
        self._side = torch.cuda.Stream(device)
        self.capture_seconds = 0.0
        self.failed: Optional[str] = None  # why capturing stopped (an op that cannot be captured); None: it did not

    @property
    def graphs(self) -> int:
        """How many shapes are captured."""
        return len(self._graphs)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One training step on ``batch`` (CPU tensors, pinned or not); its outputs, on the device."""
        key = shape_key(batch)
        hit = self._graphs.get(key)
        if hit is not None:
            graph, static_in, static_out = hit
            for k, v in batch.items():
                static_in[k].copy_(v, non_blocking=True)
            graph.replay()
            return static_out
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        on_device = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        if seen < self.warmup or self.failed is not None or len(self._graphs) >= self.max_graphs:
            return self._eager(on_device)
        return self._capture(key, on_device)

    def _eager(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The step run eagerly on the side stream (warm-up of a shape not yet captured)."""
        cur = torch.cuda.current_stream(self.device)
        self._side.wait_stream(cur)
        with torch.cuda.stream(self._side):
            out = self.fn(batch)
        cur.wait_stream(self._side)
        for t in (*batch.values(), *out.values()):
            t.record_stream(cur)
        return out

    def _capture(self, key: tuple, batch: Batch) -> dict[str, torch.Tensor]:
        """Capture the step for ``batch``'s shape and replay it once (that is this step). On a capture error
        (an op that cannot be captured) capturing stops for the run and the step runs eagerly."""
        t0 = time.perf_counter()
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=self._side):
                out = self.fn(batch)
        except Exception as e:  # noqa: BLE001 - capture is an optimisation: report and run eagerly
            self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("CUDA graph capture failed (%s); this run continues eagerly", self.failed)
            torch.cuda.synchronize(self.device)
            return self._eager(batch)
        if self._pool is None:
            self._pool = graph.pool()
        self._graphs[key] = (graph, batch, out)
        graph.replay()
        torch.cuda.synchronize(self.device)
        self.capture_seconds += time.perf_counter() - t0
        log.debug("captured a CUDA graph for %s (%d so far)", key, len(self._graphs))
        return out
