"""One run over several processes (``torchrun``): data-parallel training with rank-0-only records.

``train.batch_size`` is the *global* batch: each of the ``world`` processes takes every world-th example of
it, and DDP averages the gradients, so the update equals the single-process one with the same batch.
Every rank evaluates the full dev set (identical results); only rank 0 logs, snapshots and writes files.
AdaLoRA's importance scores use the all-reduced gradients, so its masks are identical on every rank.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch of example indices."""
        return idx[self.rank :: self.world] if self.enabled else idx

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor over ranks (identity without DDP)."""
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world
        return t

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (identity without DDP)."""
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def from_env() -> DistContext:
    """The context torchrun sets up (RANK, WORLD_SIZE, LOCAL_RANK); initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)  # NCCL warns at exit about a process group left alive
    return DistContext(rank, world, local)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_str(ctx: DistContext, value: str) -> str:
    """Rank 0's value of a string on every rank."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])
