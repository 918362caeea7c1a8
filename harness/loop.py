"""The training loop, top to bottom: AdamW, warm-up + linear decay, accumulation, periodic eval.

:func:`train` reads as the loop it runs (nanoGPT's and torchtune's recipes are the model): set up a
:class:`Training` (optimizer, schedule, data stream, resume), start it, then per optimizer step: the next
micro-batches, the step itself, its bookkeeping (window sums, divergence watch, schedule, the method's and
callbacks' hooks), the logging window every ``log_every`` steps, an evaluation every ``eval_every`` steps, a
checkpoint when one is due. The step's device work is ONE function, :meth:`Training.device_step` (zero the
gradients, forward/backward × ``grad_accum``, clip, update), whichever way it is executed
(:meth:`Training.execute`): eagerly, through a compiled or DDP-wrapped forward, or recorded in a CUDA graph.
What carries from step to step is a :class:`LoopState`; where the time goes, a :class:`Clock` (evaluations and
checkpoints are left out of train seconds and speed); divergence, a :class:`DivergenceWatch`.

No host sync in the hot path on CUDA: losses stay on the device and are read every ``log_every`` steps
(on the CPU, where a read costs nothing, a non-finite loss stops the run at the step it appears).
Every ``Checkpointing.every`` steps the whole training state (trainable weights, optimizer, scheduler, RNG
states, data position, the loop state and clock, the method's and the callbacks' own state) goes to a
checkpoint, and a run given a checkpoint continues from it exactly: on the CPU the result equals an
uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness import checkpoint as ckpt_io
from harness import metrics as metric_fns
from harness.config import TrainConfig
from harness.distributed import DistContext
from harness.errors import RunFailed
from harness.graphs import StepGraphs, shape_key
from harness.methods.base import Method
from harness.problems.base import Evaluation, ProblemType, to_device
from harness.speed import SpeedPlan, graphable_reason, plan_speed
from harness.tasks import TrainBatches
from harness.tracking import MetricLogger

log = logging.getLogger(__name__)


class Callback(Protocol):
    """Something that watches training (snapshots, recorders). Time spent here counts as train time."""

    def on_train_start(self, model: nn.Module, logger: MetricLogger) -> None: ...

    def on_step(self, model: nn.Module, step: int, logger: MetricLogger) -> None: ...

    def on_train_end(self, model: nn.Module, step: int, logger: MetricLogger) -> None: ...

    # optional, for checkpoints: ``state_dict() -> dict`` (plain values and tensors) and
    # ``load_state_dict(state)``, called before ``on_train_start`` when a run resumes


class Stopped(BaseException):
    """Training stopped on request (SIGTERM) after writing a checkpoint; re-running the command resumes.
    A BaseException, like KeyboardInterrupt: a sweep stops too (the machine is going away)."""


@dataclass
class Checkpointing:
    """How the loop checkpoints and resumes. ``save(step, tree)`` writes a checkpoint (rank 0 only);
    ``resume`` is the tree of the checkpoint to continue from; ``stop()`` true asks for a checkpoint at the
    end of the current step and a :class:`Stopped` exception (preemption notice)."""

    every: int = 0  # optimizer steps between checkpoints; 0 = none
    minutes: float = 0.0  # also one when this many minutes passed since the last (or the start); 0 = none
    save: Optional[Callable[[int, dict[str, Any]], None]] = None
    resume: Optional[dict[str, Any]] = None
    stop: Callable[[], bool] = lambda: False


@dataclass
class LoopResult:
    """What the loop measured."""

    final_eval: dict[str, float]
    best_eval: dict[str, float]  # dev metrics at the best evaluation step (chosen on validation when there is one)
    train_seconds: float
    tokens: int
    steps: int
    peak_memory_bytes: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: Optional[int] = None
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    final_valid: dict[str, float] = field(default_factory=dict)  # validation metrics at the last step ({}: none)
    best_valid: dict[str, float] = field(default_factory=dict)  # validation metrics at best_step
    best_step: Optional[int] = None  # the evaluation step whose selection metric was best
    best_selected_on: str = "test"  # validation: best_* chosen on the validation split; test: on dev itself
    speed: SpeedPlan = field(default_factory=SpeedPlan)  # how the step ran (harness/speed.py)
    compile_seconds: float = 0.0  # compiling / capturing new batch shapes (not in train_seconds)
    graphs: int = 0  # CUDA graphs captured (path graphs)
    graphs_failed: Optional[str] = None  # why capturing stopped, when it did
    initial_eval: dict[str, float] = field(default_factory=dict)  # dev metrics at step 0 (the base model), if scored
    probes_start: dict[str, float] = field(default_factory=dict)  # "<probe>/<metric>" before the first step
    probes_end: dict[str, float] = field(default_factory=dict)  # and after the last
    eval_perf: dict[str, float] = field(default_factory=dict)  # speed of the latest dev evaluation (generation)


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """lr multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device, *,
                   capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over trainable parameters (fused on CUDA); no decay on biases and norms. ``capturable``: its
    update can be recorded in a CUDA graph (step counts on the device; see :func:`lr_on_device`)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if capturable:
        return torch.optim.AdamW(groups, lr=lr, fused=True, capturable=True)
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


def lr_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each group's lr as a device tensor, which a graphed update reads on every replay; the scheduler then
    fills it in place (its own bookkeeping stays in floats: no host sync per step)."""
    for g in optimizer.param_groups:
        g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)


def plan_for(model: nn.Module, method: Method, data: "LoopData", cfg: TrainConfig, device: torch.device,
             total_steps: int, distributed: bool) -> SpeedPlan:
    """``cfg.compile`` resolved for this model, data and run length (harness/speed.py)."""
    conf = getattr(model, "config", None)
    n_layers = int(getattr(conf, "num_hidden_layers", 0) or 0)
    return plan_speed(cfg.compile, device_type=device.type, n_params=sum(p.numel() for p in model.parameters()),
                      n_layers=n_layers, total_steps=total_steps, batch_size=cfg.batch_size,
                      lengths=[len(s) for s in data.train.input_ids], n_buckets=cfg.length_buckets,
                      align=cfg.pad_to_multiple or 8,
                      graphable=graphable_reason(distributed=distributed, grad_accum=cfg.grad_accum,
                                                 gradient_checkpointing=cfg.gradient_checkpointing),
                      adapters=method.frozen_base)


def evaluate(model: nn.Module, enc: Any, *, batch_size: int, pad_id: int, device: torch.device,
             problem: ProblemType | str, metric_names: tuple[str, ...], autocast: Any,
             pad_multiple: int = 0) -> Evaluation:
    """Score a whole split with its problem type's evaluation (a registered name or the problem type itself)."""
    if isinstance(problem, str):
        from harness.problems import get_problem

        problem = get_problem(problem)
    return problem.evaluate(model, enc, batch_size=batch_size, pad_id=pad_id, device=device,
                            metric_names=metric_names, autocast=autocast, pad_multiple=pad_multiple)


def forward_loss(fwd: Callable[..., Any], problem: ProblemType, batch: dict[str, torch.Tensor],
                 autocast: Callable[[], Any]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One forward pass: (the model's outputs, the loss to backpropagate, the task loss detached).

    With ``problem.model_loss`` the model gets the labels and computes the loss itself (the problem's loss, equal by
    contract), and the method's terms ride on it (PEFT adds AdaLoRA's orthogonality term to ``outputs.loss``);
    otherwise the model gets no labels and the problem's loss is backpropagated."""
    if problem.model_loss:
        with autocast():
            outputs = fwd(**batch)
        with torch.no_grad():
            tl = problem.loss(outputs.logits, batch)
        return outputs, outputs.loss, tl
    with autocast():
        outputs = fwd(**{k: v for k, v in batch.items() if k != "labels"})
    loss = problem.loss(outputs.logits, batch)
    return outputs, loss, loss.detach()


@dataclass
class LoopData:
    """What the loop trains on and how it scores: the encoded splits, the padding id, the task's problem type
    and metrics; ``probes``: encoded sets not trained on, scored before the first step and after the last
    (forgetting); ``on_rows``: receives an evaluation's per-example rows (step, split name, rows)."""

    train: Any  # an encoded split of the problem type (harness/problems/)
    dev: Any  # the reported set: eval/<metric>
    pad_id: int
    problem: ProblemType
    metric_names: tuple[str, ...]
    main_metric: str
    valid: Any = None  # a validation split for selection (valid/<metric>); None: none
    probes: dict[str, Any] = field(default_factory=dict)
    on_rows: Optional[Callable[[int, str, list[dict[str, Any]]], None]] = None


@dataclass
class LoopState:
    """What the loop carries from one optimizer step to the next, besides the model, optimizer, scheduler and
    data position: the evaluations so far and the current logging window (sums kept on the device, read at
    each logging step). A checkpoint holds it (:meth:`state_dict`, its ``loop`` entry with the clock's)."""

    step: int = 0  # the last finished optimizer step
    final: dict[str, float] = field(default_factory=dict)  # dev metrics of the latest evaluation
    final_valid: dict[str, float] = field(default_factory=dict)  # validation metrics of the latest ({}: none)
    best: dict[str, float] = field(default_factory=dict)  # dev metrics at best_step
    best_valid: dict[str, float] = field(default_factory=dict)  # validation metrics at best_step
    best_step: Optional[int] = None
    tokens: int = 0  # tokens of the windows logged so far
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # the window's task loss, summed
    tokens_dev: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    terms_sum: dict[str, torch.Tensor] = field(default_factory=dict)  # the method's loss terms, summed
    n_in_window: int = 0  # optimizer steps in the window
    initial: dict[str, float] = field(default_factory=dict)  # dev metrics at step 0 (eval_at_start), else {}
    probes_start: dict[str, float] = field(default_factory=dict)  # the probes' metrics at step 0

    @classmethod
    def on(cls, device: torch.device) -> "LoopState":
        """A fresh state whose window sums live on ``device``."""
        return cls(loss_sum=torch.zeros((), device=device), tokens_dev=torch.zeros((), dtype=torch.long, device=device))

    def evaluated(self, step: int, dev: dict[str, float], valid: dict[str, float], main_metric: str) -> None:
        """Record the evaluation at ``step``; it becomes the best when its main metric beats the best's — on the
        validation split when there is one (``valid`` not empty), else on dev itself."""
        self.final, self.final_valid = dev, valid
        now, best = (valid, self.best_valid) if valid else (dev, self.best)
        if not self.best or _better(now[main_metric], best[main_metric], main_metric):
            self.best, self.best_valid, self.best_step = dict(dev), dict(valid), step

    def reset_window(self) -> None:
        """Start a new logging window."""
        self.loss_sum.zero_()
        self.tokens_dev.zero_()
        self.terms_sum = {}
        self.n_in_window = 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``loop`` entry (without the step, which the checkpoint holds at its top)."""
        return {"best": self.best, "final": self.final, "best_valid": self.best_valid, "final_valid": self.final_valid,
                "best_step": self.best_step, "tokens": self.tokens, "tokens_dev": self.tokens_dev,
                "loss_sum": self.loss_sum, "terms_sum": self.terms_sum, "n_in_window": self.n_in_window,
                "initial": self.initial, "probes_start": self.probes_start}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Continue from a checkpoint's ``loop`` entry taken after ``step``. Checkpoints written before
        validation splits existed lack ``best_valid``, ``final_valid`` and ``best_step``, those before step-0
        evaluations ``initial`` and ``probes_start``: empty / None."""
        device = self.loss_sum.device
        self.step = step
        self.best, self.final, self.tokens = state["best"], state["final"], state["tokens"]
        self.best_valid, self.final_valid = state.get("best_valid", {}), state.get("final_valid", {})
        self.best_step = state.get("best_step")
        self.initial, self.probes_start = state.get("initial", {}), state.get("probes_start", {})
        self.tokens_dev = state["tokens_dev"].to(device)
        self.loss_sum = state["loss_sum"].to(device)
        self.terms_sum = {k: v.to(device) for k, v in state["terms_sum"].items()}
        self.n_in_window = state["n_in_window"]


class Clock:
    """Where the loop's time goes. Train seconds are wall seconds minus evaluations and checkpoints (spent
    inside :meth:`paused`); the logging window's seconds (for ``perf/tokens_per_s`` and ``perf/s_per_step``)
    leave them out too. Seconds of earlier attempts carry over through :meth:`state_dict`."""

    def __init__(self, train_seconds: float = 0.0, window_seconds: float = 0.0) -> None:
        now = time.perf_counter()
        self._start = now - train_seconds
        self._window_start = now - window_seconds
        self._last_checkpoint = now
        self.paused_seconds = 0.0  # this attempt's evaluations and checkpoints
        self.checkpoint_seconds = 0.0
        self.checkpoints = 0
        self.compile_seconds = 0.0  # this attempt's compiling / graph capturing

    @classmethod
    def resumed(cls, state: dict[str, Any]) -> "Clock":
        """A clock continuing the train and window seconds of a checkpoint's ``loop`` entry."""
        return cls(state["train_seconds"], state["window_seconds"])

    @contextlib.contextmanager
    def paused(self, *, checkpoint: bool = False) -> Iterator[None]:
        """Time spent in the block counts in neither train seconds nor the window (a checkpoint: also counted)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            now = time.perf_counter()
            self.paused_seconds += now - t0
            self._window_start += now - t0
            if checkpoint:
                self.checkpoints += 1
                self.checkpoint_seconds += now - t0
                self._last_checkpoint = now

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` just spent compiling or capturing out of train seconds and the window."""
        self.paused_seconds += seconds
        self._window_start += seconds
        self.compile_seconds += seconds

    def train_seconds(self) -> float:
        return time.perf_counter() - self._start - self.paused_seconds

    def window_seconds(self) -> float:
        return time.perf_counter() - self._window_start

    def new_window(self) -> None:
        self._window_start = time.perf_counter()

    def since_checkpoint(self) -> float:
        """Seconds since the last checkpoint (or the start of this attempt)."""
        return time.perf_counter() - self._last_checkpoint

    def state_dict(self) -> dict[str, float]:
        """The clock's part of the checkpoint's ``loop`` entry."""
        return {"train_seconds": self.train_seconds(), "window_seconds": self.window_seconds()}


class DivergenceWatch:
    """The first step whose loss or gradient norm was not finite, kept on the device (no host sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none

    def see(self, value: torch.Tensor, step: int) -> None:
        self.first_bad = torch.where((self.first_bad == 0) & ~torch.isfinite(value), step, self.first_bad)

    def check(self) -> None:
        """Raise RunFailed naming the first step whose loss or gradient norm was not finite (syncs the device)."""
        bad = int(self.first_bad)
        if bad:
            raise RunFailed(f"train/loss or gradient norm is not finite at step {bad}: the run diverged "
                            f"(lower the lr: method.lr / train.lr, or clip: train.max_grad_norm)")


def train(model: nn.Module, method: Method, data: LoopData, cfg: TrainConfig, *, total_steps: int, lr: float,
          seed: int, device: torch.device, logger: MetricLogger, callbacks: Sequence[Callback] = (),
          dist_ctx: DistContext = DistContext(), checkpointing: Checkpointing = Checkpointing(),
          speed: Optional[SpeedPlan] = None) -> LoopResult:
    """Train for ``total_steps`` optimizer steps; evaluate every ``cfg.eval_every`` steps and at the end.

    Each evaluation scores dev (``eval/<metric>``, the reported set) and, when ``data.valid`` is given, the
    validation split (``valid/<metric>``). The best step is chosen on validation when there is one (its dev
    metrics become ``best_eval``), else on dev itself (``best_selected_on="test"``).

    Callbacks see the model before the first step (step 0), after every optimizer step (after
    ``method.after_optimizer_step``, before the gradients are released, so they are still there) and at the
    end. With ``checkpointing.resume`` the loop continues after the checkpoint's step (callbacks get their state
    back through ``load_state_dict`` before ``on_train_start``).

    ``speed``: how the step runs (default: ``cfg.compile`` resolved by :func:`plan_for`). Every path runs the
    same step function (:meth:`Training.device_step`): eagerly, through a compiled or DDP-wrapped forward, or
    recorded in a CUDA graph. On the static-shape paths (``graphs``, ``model``) training batches are padded to
    the plan's bucket lengths, and the first step of each new batch shape (compiling or capturing it) is timed
    apart: ``compile_seconds``, not train seconds.
    """
    plan = speed if speed is not None else plan_for(model, method, data, cfg, device, total_steps,
                                                    dist_ctx.enabled)
    log.info("step: %s (%s)%s", plan.path, plan.reason,
             f"; batches padded to {list(plan.buckets)}" if plan.buckets else "")
    run = Training(model, method, data, cfg, plan, total_steps=total_steps, lr=lr, seed=seed, device=device,
                   logger=logger, callbacks=callbacks, ctx=dist_ctx, ck=checkpointing)
    run.start()
    for step in range(run.state.step + 1, total_steps + 1):
        out = run.execute(run.next_micro_batches())
        run.finish_step(step, out)
        if step % cfg.log_every == 0 or step == total_steps:
            run.log_window(step)
        run.progress.update(1)
        if step % cfg.eval_every == 0 or step == total_steps:
            with run.clock.paused():
                run.evaluate_at(step)
        run.maybe_checkpoint(step)
    return run.finish()


class Training:
    """One training run's objects (optimizer, schedule, data stream, loop state, clock) and the parts of its
    step; :func:`train` drives it. The device work of a step is one function, :meth:`device_step`, whichever
    way it runs (:meth:`execute`)."""

    def __init__(self, model: nn.Module, method: Method, data: LoopData, cfg: TrainConfig, plan: SpeedPlan, *,
                 total_steps: int, lr: float, seed: int, device: torch.device, logger: MetricLogger,
                 callbacks: Sequence[Callback], ctx: DistContext, ck: Checkpointing) -> None:
        self.model, self.method, self.data, self.cfg, self.plan = model, method, data, cfg, plan
        self.total_steps, self.device, self.logger, self.callbacks, self.ctx, self.ck = \
            total_steps, device, logger, callbacks, ctx, ck
        graphed = plan.path == "graphs"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed)) \
            if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext
        self.optimizer = make_optimizer(model, lr, cfg.weight_decay, device, capturable=graphed)
        warmup = int(math.ceil(cfg.warmup_ratio * total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(total_steps, warmup))
        lengths = [len(x) for x in data.train.input_ids] if cfg.group_by_length else None
        self.batches = TrainBatches(len(data.train), cfg.batch_size, seed, lengths)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.state = LoopState.on(device)
        if ck.resume is not None:  # before DDP wraps the model (DDP broadcasts rank 0's weights at construction)
            _restore_training(ck.resume, model, self.optimizer, self.scheduler, self.batches, method, callbacks)
            self.state.load_state_dict(ck.resume["loop"], step=ck.resume["step"])
        if graphed:
            lr_on_device(self.optimizer, device)
        self.fwd: Callable[..., Any] = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None) if ctx.enabled else model
        if plan.path == "model":  # the training forward only: evaluation runs the eager model (no eval compiles)
            self.fwd = torch.compile(self.fwd, dynamic=False,
                                     **({"mode": cfg.compile_mode} if cfg.compile_mode else {}))
        self.new_shapes: set[tuple] = set()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.watch = DivergenceWatch(device)
        self.eval_perf: dict[str, float] = {}  # the latest dev evaluation's speed
        self.graphs: Optional[StepGraphs] = None
        self.clock = Clock()
        self.progress: Any = None

    # -- start and end ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Callbacks' start, the RNG state of a resumed run, the clock and bar; at step 0 the base model's
        score and the probes' (when the problem type or the probes ask for them)."""
        ck, state, data = self.ck, self.state, self.data
        for cb in self.callbacks:
            cb.on_train_start(self.model, self.logger)
        self.model.train()
        if ck.resume is not None:
            ckpt_io.set_rng_state(ck.resume["rng"])  # last: nothing from here to the first step draws
            log.info("resumed after step %d of %d", state.step, self.total_steps)
        self.clock = Clock.resumed(ck.resume["loop"]) if ck.resume is not None else Clock()
        self.progress = _progress(self.total_steps, self.cfg.progress, initial=state.step)
        if self.plan.path == "graphs":
            self.graphs = StepGraphs(lambda batch: self.device_step([batch]), self.device)
        if state.step == 0 and (data.problem.eval_at_start or data.probes):
            with self.clock.paused():  # the base model: its score, and the probes' before any training
                if data.problem.eval_at_start:
                    self.evaluate_at(0)
                state.probes_start = self.probe_at(0) if data.probes else {}

    def finish(self) -> LoopResult:
        """The probes after the last step, the callbacks' end; what the loop measured."""
        self.progress.close()
        probes_end = {}
        if self.data.probes:
            with self.clock.paused():
                probes_end = self.probe_at(self.total_steps)
        for cb in self.callbacks:
            self.guarded(lambda: cb.on_train_end(self.model, self.total_steps, self.logger))
        device, state, clock, graphs = self.device, self.state, self.clock, self.graphs
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _cpu_peak_rss()
        return LoopResult(state.final, state.best, clock.train_seconds(), state.tokens, self.total_steps, peak,
                          resumed_from=self.ck.resume["step"] if self.ck.resume is not None else None,
                          checkpoints=clock.checkpoints, checkpoint_seconds=clock.checkpoint_seconds,
                          final_valid=state.final_valid, best_valid=state.best_valid, best_step=state.best_step,
                          best_selected_on="validation" if self.data.valid is not None else "test",
                          speed=self.plan, compile_seconds=clock.compile_seconds,
                          graphs=graphs.graphs if graphs is not None else 0,
                          graphs_failed=graphs.failed if graphs is not None else None,
                          initial_eval=state.initial, probes_start=state.probes_start, probes_end=probes_end,
                          eval_perf=self.eval_perf)

    # -- the step -------------------------------------------------------------------------------------------

    def next_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """The next ``grad_accum`` training batches, on the CPU, padded to the plan's buckets (or the longest
        example); their tokens join the logging window."""
        data, cfg = self.data, self.cfg
        micro = [data.problem.collate(data.train, self.ctx.shard(next(self.batches)), data.pad_id,
                                      cfg.pad_to_multiple, buckets=self.plan.buckets) for _ in range(cfg.grad_accum)]
        self.state.tokens_dev += sum(int(b["attention_mask"].sum()) for b in micro)
        return micro

    def device_step(self, micro: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The step's device work, the same on every path: zero the gradients in place, forward and backward
        each micro-batch (loss / len(micro)), clip, update. Returns tensors, nothing read on the host (a CUDA
        graph records it): ``loss`` (the task loss, mean over the micro-batches), ``term:<name>`` (the method's
        loss terms), ``grad_norm`` (when clipping). On the CPU a non-finite loss or gradient norm stops the run
        here, before the update reaches the weights (a host read is free there)."""
        self.optimizer.zero_grad(set_to_none=False)  # in place: a graph's gradients are allocated once
        n, out = len(micro), {}
        for batch in micro:
            outputs, loss, tl = forward_loss(self.fwd, self.data.problem, batch, self.autocast)
            parts = {"loss": tl, **{f"term:{k}": v for k, v in self.method.loss_terms(outputs, tl).items()}}
            (loss if n == 1 else loss / n).backward()
            for k, v in parts.items():
                v = v if n == 1 else v / n
                out[k] = out[k] + v if k in out else v
        if self.cfg.max_grad_norm > 0:
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        if self.device.type == "cpu":
            for k in ("loss", "grad_norm"):
                if k in out:
                    self.watch.see(out[k], self.state.step + 1)
            self.watch.check()
        self.optimizer.step()
        return out

    def execute(self, micro: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """:meth:`device_step` on ``micro`` (CPU batches) as the plan says: replayed from a CUDA graph per batch
        shape (``graphs``), or run on the device's copies (eager, a compiled forward, DDP). Capturing and
        compiling a new shape is left out of train seconds."""
        if self.graphs is not None:
            captured, spent = self.graphs.graphs, self.graphs.capture_seconds
            out = self.graphs(micro[0])
            if self.graphs.graphs > captured:
                self.clock.exclude(self.graphs.capture_seconds - spent)
            return out
        keys = {shape_key(b) for b in micro} - self.new_shapes if self.plan.path == "model" else set()
        if keys:  # a compiled model's first pass on these shapes
            self.new_shapes |= keys
            _sync(self.device)
            t0 = time.perf_counter()
        out = self.device_step([to_device(b, self.device) for b in micro])
        if keys:
            _sync(self.device)
            self.clock.exclude(time.perf_counter() - t0)
        return out

    def finish_step(self, step: int, out: dict[str, torch.Tensor]) -> None:
        """After the update: the window's sums, the divergence watch, the schedule, the method's and callbacks'
        hooks (AdaLoRA's update_and_allocate reads the gradients), then the gradients are released (kept
        allocated under CUDA graphs, which write into them)."""
        state = self.state
        state.loss_sum += out["loss"]
        self.watch.see(out["loss"], step)
        for k, v in out.items():
            if k.startswith("term:"):
                state.terms_sum[k[5:]] = state.terms_sum.get(k[5:], 0) + v
        if "grad_norm" in out:
            self.watch.see(out["grad_norm"], step)
        self.scheduler.step()
        self.guarded(lambda: self.method.after_optimizer_step(self.model, step))
        for cb in self.callbacks:
            self.guarded(lambda: cb.on_step(self.model, step, self.logger))
        if self.graphs is None:
            self.optimizer.zero_grad(set_to_none=True)
        state.step = step
        state.n_in_window += 1

    def guarded(self, fn: Callable[[], Any]) -> Any:
        """Run a method/callback hook; its error on diverged weights is reported as the divergence."""
        try:
            return fn()
        except Exception:
            self.watch.check()
            raise

    # -- logging, evaluation, checkpoints -------------------------------------------------------------------

    def log_window(self, step: int) -> None:
        """The window's mean loss, lr, speed and the method's metrics, logged at ``step``; then a new window."""
        state, ctx, clock = self.state, self.ctx, self.clock
        self.watch.check()
        n = state.n_in_window
        mean_loss = float(ctx.mean(state.loss_sum)) / n
        if not math.isfinite(mean_loss):
            raise RunFailed(f"train/loss is {mean_loss} at step {step}: the run diverged (lower the lr)")
        elapsed = clock.window_seconds()
        window_tokens = int(ctx.sum(state.tokens_dev))
        state.tokens += window_tokens
        row = {"train/loss": mean_loss, "train/lr": float(self.scheduler.get_last_lr()[0]),
               "perf/tokens_per_s": window_tokens / elapsed, "perf/s_per_step": elapsed / n}
        row.update({k: float(ctx.mean(torch.as_tensor(v))) / n for k, v in state.terms_sum.items()})
        row.update(self.guarded(lambda: self.method.log_metrics(self.model)))
        self.logger.log(row, step)
        self.progress.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{row['perf/tokens_per_s']:.0f}")
        state.reset_window()
        clock.new_window()

    def score(self, enc: Any, name: str, step: int) -> dict[str, float]:
        """An evaluation of one split (its per-example rows to ``data.on_rows``)."""
        cfg, data = self.cfg, self.data
        ev = evaluate(self.model, enc, batch_size=cfg.eval_batch_size, pad_id=data.pad_id, device=self.device,
                      problem=data.problem, metric_names=data.metric_names, autocast=self.autocast,
                      pad_multiple=cfg.pad_to_multiple)
        if ev.rows and data.on_rows is not None and self.ctx.main:
            data.on_rows(step, name, ev.rows)
        if ev.perf and name == "dev":
            self.logger.log({f"perf/eval_{k}": v for k, v in ev.perf.items()}, step)
            self.eval_perf.update(ev.perf)
        return ev.metrics

    def evaluate_at(self, step: int) -> None:
        """Score dev (and validation) at ``step``, log eval/... and valid/..., and keep the best."""
        data = self.data
        dev = self.score(data.dev, "dev", step)
        valid = self.score(data.valid, "valid", step) if data.valid is not None else {}
        self.logger.log({**{f"eval/{k}": v for k, v in dev.items()},
                         **{f"valid/{k}": v for k, v in valid.items()}}, step)
        log.info("step %d eval %s%s", step, " ".join(f"{k}={v:.4f}" for k, v in dev.items()),
                 "".join(f" valid/{k}={v:.4f}" for k, v in valid.items()))
        self.state.evaluated(step, dev, valid, data.main_metric)
        if step == 0:
            self.state.initial = dict(dev)

    def probe_at(self, step: int) -> dict[str, float]:
        """Score the probes (sets not trained on) at ``step``; logged as forget/<probe>/<metric>."""
        out = {f"{name}/{k}": v for name, enc in self.data.probes.items()
               for k, v in self.score(enc, name, step).items()}
        self.logger.log({f"forget/{k}": v for k, v in out.items()}, step)
        return out

    def maybe_checkpoint(self, step: int) -> None:
        """A checkpoint after ``step`` when one is due (every ``ck.every`` steps, ``ck.minutes`` passed, or a
        stop was asked for: then :class:`Stopped`)."""
        ck, clock = self.ck, self.clock
        stop = ck.stop()
        timed = ck.minutes > 0 and clock.since_checkpoint() >= 60 * ck.minutes
        if step < self.total_steps and ((ck.every and step % ck.every == 0) or timed or stop):
            with clock.paused(checkpoint=True):
                self.save_checkpoint(step)
            if stop:
                self.progress.close()
                raise Stopped(f"stopped on request after step {step}; a checkpoint was written, re-run the "
                              f"same command to continue")

    def save_checkpoint(self, step: int) -> None:
        """The whole training state after ``step`` to ``ck.save`` (rank 0); never a diverged one."""
        self.watch.check()
        if self.ctx.main and self.ck.save is not None:
            b = self.batches
            self.ck.save(step, {
                "step": step,
                "model": {n: p for n, p in self.model.named_parameters() if p.requires_grad},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "data": {"epoch": b.epoch, "offset": b.offset, "n": b.n, "batch_size": b.batch_size, "seed": b.seed},
                "loop": {**self.state.state_dict(), **self.clock.state_dict()},
                "method": self.method.state_dict(self.model),
                "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
                "rng": ckpt_io.rng_state(),
            })


def _restore_training(tree: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      batches: TrainBatches, method: Method, callbacks: Sequence[Callback]) -> None:
    """Put a checkpoint's state back into freshly built training objects (RNG states: by the caller)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = tree["model"]
    if set(saved) != set(params) or any(saved[n].shape != params[n].shape for n in params):
        diff = sorted(set(saved) ^ set(params)) or [n for n in params if saved[n].shape != params[n].shape]
        raise RunFailed(f"the checkpoint does not match this model ({len(diff)} trainable tensors differ, e.g. "
                        f"{diff[0]}); start over with train.resume=never")
    data = tree["data"]
    if (data["n"], data["batch_size"], data["seed"]) != (batches.n, batches.batch_size, batches.seed):
        raise RunFailed("the checkpoint's data stream differs from this run's; start over with train.resume=never")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n])
    optimizer.load_state_dict(tree["optimizer"])
    scheduler.load_state_dict(tree["scheduler"])
    batches.seek(data["epoch"], data["offset"])
    method.load_state_dict(model, tree["method"])
    for cb, state in zip(callbacks, tree["callbacks"]):
        if state is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(state)


def _better(a: float, b: float, metric: str) -> bool:
    m = metric_fns.METRICS.get(metric)
    return a < b if m is not None and not m.higher_is_better else a > b


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _progress(total: int, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    # leave=None: kept on screen alone, cleared when it sits under a sweep's bar
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True,
                leave=None)
