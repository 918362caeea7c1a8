"""How a run executes its training step: ``train.compile`` resolved to one path, with the reason.

Paths: ``eager`` (PyTorch as written), ``graphs`` (the eager step recorded as one CUDA graph per batch shape and
replayed: no host overhead, same kernels; harness/graphs.py), ``layers`` (``torch.compile`` of each transformer
layer), ``model`` (``torch.compile`` of the whole model: fused kernels too, but compiling costs seconds to
minutes per batch shape). ``auto`` (the default) chooses:

- off CUDA: ``eager`` — compile is never chosen on a CPU unless asked;
- on CUDA: ``model`` when its estimated saving over the run beats its estimated compile time, else ``graphs``
  (where a graph can hold the step: one process, no gradient accumulation or checkpointing) when the step is
  launch-bound, else ``eager``. Adapter methods are taken as launch-bound (their many small per-layer kernels:
  graphs took the 1.1B model's LoRA / DoRA / AdaLoRA step from 171 / 293 / 234 ms to 155 / 198 / 160 ms); full
  fine-tuning only while its estimated matmul time is under :data:`GPU_BOUND_S` (MiniLM: 27 → 3 ms a step; the
  1.1B model, GPU-bound: 170 → 185 ms, so eager). Measured: benchmarks/results/defaults_h200.

The saving is estimated as :data:`FUSION_SAVING` of the step's matmul time, 6·N·tokens at
:data:`GPU_FLOPS` (a conservative H100/H200-class rate: a slower GPU saves more, so ``auto`` errs towards not
compiling); the compile time as :data:`COMPILE_S_BASE` + :data:`COMPILE_S_PER_LAYER` per layer, per batch shape.
The constants come from H200 measurements (docs/performance.md). Static-shape paths (``graphs``, ``model``)
pad batches to a few lengths chosen from the training set's length distribution (harness/buckets.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from harness.buckets import expected_padded_length, length_buckets
from harness.errors import ConfigError

#: the paths ``train.compile`` may name; ``none`` is the eager path
COMPILE_CHOICES = ("auto", "none", "graphs", "layers", "model")
#: fraction of the step's estimated matmul time a whole-model compile saves over the same step graphed (fusing
#: the elementwise work into the matmuls' neighbours; the 1.1B model's LoRA: 155 ms graphed, 105.5 ms compiled,
#: 50 ms = 0.39 of its 127 ms estimate; benchmarks/results/defaults_h200)
FUSION_SAVING = 0.35
GPU_FLOPS = 4e14  # dense bf16 FLOP/s a training step reaches on an H100/H200-class GPU
COMPILE_S_BASE = 20.0  # seconds to compile a model's step for one batch shape, plus ...
COMPILE_S_PER_LAYER = 3.5  # ... this per transformer layer (forward and backward; 22 layers: 96 s measured)
GPU_BOUND_S = 0.02  # full fine-tuning: a step whose matmuls take longer than this is not launch-bound
#: batch lengths per path when ``train.length_buckets=0``: graphs are cheap to record, compiles are not
DEFAULT_BUCKETS = {"graphs": 8, "model": 4}


@dataclass(frozen=True)
class SpeedPlan:
    """The chosen path, why, and the padded lengths batches are padded to (() = to the longest example)."""

    path: str = "eager"  # eager | graphs | layers | model
    reason: str = "train.compile=none"
    buckets: tuple[int, ...] = ()
    expected_length: Optional[float] = None  # mean padded batch length with these buckets
    longest_length: Optional[float] = None  # mean padded batch length padding to the longest (for the overhead)
    estimate: dict[str, float] = field(default_factory=dict)  # the numbers behind an ``auto`` choice

    def record(self) -> dict[str, Any]:
        """The plan as the run's record stores it (``speed`` in summary.json)."""
        return asdict(self) | {"buckets": list(self.buckets)}


def check_request(requested: str, *, device_type: str, graphable: Optional[str]) -> None:
    """Raise ConfigError (exit 2, before any heavy work) when an explicitly requested path cannot run here."""
    if requested == "graphs" and device_type != "cuda":
        raise ConfigError(f"train.compile=graphs: CUDA graphs need a CUDA device, this run is on {device_type}; "
                          f"use train.compile=auto or none")
    if requested == "graphs" and graphable is not None:
        raise ConfigError(f"train.compile=graphs: a CUDA graph cannot hold this step ({graphable}); "
                          f"use train.compile=auto, none or model")


def graphable_reason(*, distributed: bool, grad_accum: int, gradient_checkpointing: bool) -> Optional[str]:
    """None when one CUDA graph can hold a training step, else the setting that prevents it."""
    if distributed:
        return "several processes (torchrun)"
    if grad_accum > 1:
        return "train.grad_accum > 1"
    if gradient_checkpointing:
        return "train.gradient_checkpointing=true"
    return None


def plan_speed(requested: str, *, device_type: str, n_params: int, n_layers: int, total_steps: int,
               batch_size: int, lengths: Sequence[int], n_buckets: int = 0, align: int = 8,
               graphable: Optional[str] = None, adapters: bool = True) -> SpeedPlan:
    """Resolve ``train.compile`` (``requested``) for one run. ``lengths``: the training examples' token counts;
    ``graphable``: None when a CUDA graph can hold the step, else why not (:func:`graphable_reason`);
    ``adapters``: the method trains adapters on a frozen model (else: full fine-tuning)."""
    check_request(requested, device_type=device_type, graphable=graphable)
    if requested == "none":
        return SpeedPlan("eager", "train.compile=none")
    if requested == "layers":
        return SpeedPlan("layers", "train.compile=layers")
    if requested in ("graphs", "model"):
        return _with_buckets(SpeedPlan(requested, f"train.compile={requested}"), lengths, batch_size,
                             n_buckets or DEFAULT_BUCKETS[requested], align)
    if device_type != "cuda":
        return SpeedPlan("eager", f"auto: eager on {device_type} (compile is chosen on CUDA only)")
    k_model = n_buckets or DEFAULT_BUCKETS["model"]
    model_plan = _with_buckets(SpeedPlan("model"), lengths, batch_size, k_model, align)
    tokens = batch_size * (model_plan.expected_length or 0.0)
    step_s = 6.0 * n_params * tokens / GPU_FLOPS
    shapes = len(model_plan.buckets) + (1 if len(lengths) % batch_size else 0)  # + the epoch's last, short batch
    compile_s = shapes * (COMPILE_S_BASE + COMPILE_S_PER_LAYER * n_layers)
    saving_s = total_steps * FUSION_SAVING * step_s
    estimate = {"matmul_s_per_step": step_s, "compile_s": compile_s, "saving_s": saving_s, "shapes": shapes}
    if saving_s > compile_s:
        return SpeedPlan("model", f"auto: compile pays (saves ~{saving_s:.0f} s over {total_steps} steps, costs "
                                  f"~{compile_s:.0f} s for {shapes} shapes)", model_plan.buckets,
                         model_plan.expected_length, model_plan.longest_length, estimate)
    why = f"compile would save ~{saving_s:.0f} s and cost ~{compile_s:.0f} s"
    if graphable is not None:
        return SpeedPlan("eager", f"auto: eager ({why}; no CUDA graphs: {graphable})", estimate=estimate)
    if not adapters and step_s > GPU_BOUND_S:
        return SpeedPlan("eager", f"auto: eager ({why}; a full fine-tuning step of ~{1e3 * step_s:.0f} ms of matmuls "
                                  f"is GPU-bound: no CUDA graphs)", estimate=estimate)
    plan = _with_buckets(SpeedPlan("graphs"), lengths, batch_size, n_buckets or DEFAULT_BUCKETS["graphs"], align)
    return SpeedPlan("graphs", f"auto: CUDA graphs ({why})", plan.buckets, plan.expected_length,
                     plan.longest_length, estimate)


def _with_buckets(plan: SpeedPlan, lengths: Sequence[int], batch_size: int, k: int, align: int) -> SpeedPlan:
    edges = length_buckets(lengths, batch_size, k, align)
    return SpeedPlan(plan.path, plan.reason, edges, expected_padded_length(lengths, batch_size, edges),
                     expected_padded_length(lengths, batch_size), plan.estimate)
