"""The training loop, top to bottom: AdamW, warm-up + linear decay, accumulation, periodic eval.

No host sync in the hot path on CUDA: losses stay on the device and are read every ``log_every`` steps
(on the CPU, where a read costs nothing, a non-finite loss stops the run at the step it appears).
Every ``Checkpointing.every`` steps the whole training state (trainable weights, optimizer, scheduler, RNG
states, data position, loop counters, the method's and the callbacks' own state) goes to a checkpoint, and a
run given a checkpoint continues from it exactly: on the CPU the result equals an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness import checkpoint as ckpt_io
from harness import metrics as metric_fns
from harness.config import TrainConfig
from harness.distributed import DistContext
from harness.errors import RunFailed
from harness.methods.base import Method
from harness.tasks import Encoded, TrainBatches, collate
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


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """lr multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over trainable parameters (fused on CUDA); no decay on biases and norms."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a CPU batch to the device; through pinned memory and without blocking on CUDA."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem: str) -> torch.Tensor:
    """The loss transformers computes from logits (B, C) — CE, or MSE for regression (C = 1)."""
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate(model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int, device: torch.device,
             problem: str, metric_names: tuple[str, ...], autocast: Any, pad_multiple: int = 0) -> dict[str, float]:
    """Score the whole split: predictions (N,) against labels (N,)."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(s) for s in enc.input_ids], kind="stable")  # length-sorted: less padding
    preds = np.empty(len(enc), dtype=np.float64 if problem == "regression" else np.int64)
    losses = []
    for start in range(0, len(enc), batch_size):
        idx = order[start : start + batch_size]
        batch = to_device(collate(enc, idx, pad_id, pad_multiple), device)
        labels = batch.pop("labels")
        with autocast():
            logits = model(**batch).logits.float()
        losses.append(task_loss(logits, labels, problem) * len(idx))
        out = logits.squeeze(-1) if problem == "regression" else logits.argmax(-1)
        preds[idx] = out.cpu().numpy()
    model.train(was_training)
    result = metric_fns.compute(metric_names, preds, enc.labels)
    result["loss"] = float(torch.stack(losses).sum()) / len(enc)
    return result


def train(model: nn.Module, method: Method, *, train_enc: Encoded, dev_enc: Encoded, cfg: TrainConfig,
          total_steps: int, lr: float, seed: int, device: torch.device, pad_id: int, problem: str,
          metric_names: tuple[str, ...], main_metric: str, logger: MetricLogger,
          callbacks: Sequence[Callback] = (), dist_ctx: DistContext = DistContext(),
          checkpointing: Checkpointing = Checkpointing(), valid_enc: Optional[Encoded] = None) -> LoopResult:
    """Train for ``total_steps`` optimizer steps; evaluate every ``eval_every`` steps and at the end.

    Each evaluation scores dev (``eval/<metric>``, the reported set) and, when ``valid_enc`` is given, the
    validation split (``valid/<metric>``). The best step is chosen on validation when there is one (its dev
    metrics become ``best_eval``), else on dev itself (``best_selected_on="test"``).

    Callbacks see the model before the first step (step 0), after every optimizer step (after
    ``method.after_optimizer_step``, before ``zero_grad``, so gradients are still there) and at the end.
    With ``checkpointing.resume`` the loop continues after the checkpoint's step (callbacks get their state
    back through ``load_state_dict`` before ``on_train_start``).
    """
    use_bf16 = cfg.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    optimizer = make_optimizer(model, lr, cfg.weight_decay, device)
    warmup = int(math.ceil(cfg.warmup_ratio * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup))
    batches = TrainBatches(len(train_enc), cfg.batch_size, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    ctx = dist_ctx
    ck = checkpointing
    resume = ck.resume
    if resume is not None:  # before DDP wraps the model (DDP broadcasts rank 0's weights at construction)
        _restore_training(resume, model, optimizer, scheduler, batches, method, callbacks)
    fwd = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.enabled else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def score(enc: Encoded) -> dict[str, float]:
        return evaluate(model, enc, batch_size=cfg.eval_batch_size, pad_id=pad_id, device=device, problem=problem,
                        metric_names=metric_names, autocast=autocast, pad_multiple=cfg.pad_to_multiple)

    def run_eval(step: int) -> tuple[dict[str, float], dict[str, float]]:
        """(dev metrics, validation metrics or {}) at ``step``, logged as eval/... and valid/..."""
        res = score(dev_enc)
        val = score(valid_enc) if valid_enc is not None else {}
        logger.log({**{f"eval/{k}": v for k, v in res.items()}, **{f"valid/{k}": v for k, v in val.items()}}, step)
        log.info("step %d eval %s%s", step, " ".join(f"{k}={v:.4f}" for k, v in res.items()),
                 "".join(f" valid/{k}={v:.4f}" for k, v in val.items()))
        return res, val

    for cb in callbacks:
        cb.on_train_start(model, logger)
    model.train()
    best: dict[str, float] = {}
    final: dict[str, float] = {}
    best_valid: dict[str, float] = {}
    final_valid: dict[str, float] = {}
    best_step: Optional[int] = None
    tokens = 0
    tokens_dev = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    terms_sum: dict[str, torch.Tensor] = {}
    # divergence watch, on the device: the first step whose loss or gradient norm was not finite (0: none)
    first_bad = torch.zeros((), dtype=torch.long, device=device)
    n_in_window = 0
    start = 0
    train_before = 0.0  # train seconds of the attempts before a resume
    window_before = 0.0
    n_ckpt, ckpt_seconds = 0, 0.0
    if resume is not None:
        lp = resume["loop"]
        start, best, final, tokens, n_in_window = resume["step"], lp["best"], lp["final"], lp["tokens"], lp["n_in_window"]
        best_valid, final_valid = lp.get("best_valid", {}), lp.get("final_valid", {})
        best_step = lp.get("best_step")
        tokens_dev = lp["tokens_dev"].to(device)
        loss_sum = lp["loss_sum"].to(device)
        terms_sum = {k: v.to(device) for k, v in lp["terms_sum"].items()}
        train_before, window_before = lp["train_seconds"], lp["window_seconds"]
        ckpt_io.set_rng_state(resume["rng"])  # last: nothing between here and the next step draws
        log.info("resumed after step %d of %d", start, total_steps)
    window_start = time.perf_counter() - window_before
    eval_seconds = 0.0
    t0 = time.perf_counter() - train_before
    last_ckpt = time.perf_counter()
    progress = _progress(total_steps, cfg.progress, initial=start)

    def check_finite() -> None:
        """Raise RunFailed naming the first step whose loss or gradient norm was not finite (syncs the device)."""
        bad = int(first_bad)
        if bad:
            raise RunFailed(f"train/loss or gradient norm is not finite at step {bad}: the run diverged "
                            f"(lower the lr: method.lr / train.lr, or clip: train.max_grad_norm)")

    def guarded(fn: Callable[[], Any]) -> Any:
        """Run a method/callback hook; its error on diverged weights is reported as the divergence."""
        try:
            return fn()
        except Exception:
            check_finite()
            raise

    step = start
    for step in range(start + 1, total_steps + 1):
        for _ in range(cfg.grad_accum):
            idx = ctx.shard(next(batches))
            batch = to_device(collate(train_enc, idx, pad_id, cfg.pad_to_multiple), device)
            tokens_dev += batch["attention_mask"].sum()
            with autocast():
                outputs = fwd(**batch)
            loss = outputs.loss
            tl = task_loss(outputs.logits, batch["labels"], problem).detach()
            for k, v in method.loss_terms(outputs, tl).items():
                terms_sum[k] = terms_sum.get(k, 0) + v / cfg.grad_accum
            (loss / cfg.grad_accum).backward()
            loss_sum += tl / cfg.grad_accum
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(tl), step, first_bad)
        if cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(norm), step, first_bad)
        if device.type == "cpu":  # free here: stop before a non-finite update reaches the weights
            check_finite()
        optimizer.step()
        scheduler.step()
        guarded(lambda: method.after_optimizer_step(model, step))  # AdaLoRA: update_and_allocate, before zero_grad
        for cb in callbacks:
            guarded(lambda: cb.on_step(model, step, logger))
        optimizer.zero_grad(set_to_none=True)
        n_in_window += 1

        if step % cfg.log_every == 0 or step == total_steps:
            check_finite()
            mean_loss = float(ctx.mean(loss_sum)) / n_in_window
            if not math.isfinite(mean_loss):
                raise RunFailed(f"train/loss is {mean_loss} at step {step}: the run diverged (lower the lr)")
            elapsed = time.perf_counter() - window_start
            window_tokens = int(ctx.sum(tokens_dev))
            tokens += window_tokens
            row = {"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0],
                   "perf/tokens_per_s": window_tokens / elapsed, "perf/s_per_step": elapsed / n_in_window}
            row.update({k: float(ctx.mean(torch.as_tensor(v))) / n_in_window for k, v in terms_sum.items()})
            row.update(guarded(lambda: method.log_metrics(model)))
            logger.log(row, step)
            progress.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{row['perf/tokens_per_s']:.0f}")
            loss_sum.zero_()
            tokens_dev.zero_()
            terms_sum = {}
            n_in_window = 0
            window_start = time.perf_counter()
        progress.update(1)

        if step % cfg.eval_every == 0 or step == total_steps:
            e0 = time.perf_counter()
            final, final_valid = run_eval(step)
            chosen_now, chosen_best = (final_valid, best_valid) if valid_enc is not None else (final, best)
            if not best or _better(chosen_now[main_metric], chosen_best[main_metric], main_metric):
                best, best_valid, best_step = dict(final), dict(final_valid), step
            eval_seconds += time.perf_counter() - e0
            window_start += time.perf_counter() - e0  # eval time counts in neither speed nor train time

        stop = ck.stop()
        timed = ck.minutes > 0 and time.perf_counter() - last_ckpt >= 60 * ck.minutes
        if step < total_steps and ((ck.every and step % ck.every == 0) or timed or stop):
            c0 = time.perf_counter()
            check_finite()  # never checkpoint a diverged state
            if ctx.main and ck.save is not None:
                now = time.perf_counter()
                tree = {
                    "step": step,
                    "model": {n: p for n, p in model.named_parameters() if p.requires_grad},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "data": {"epoch": batches.epoch, "offset": batches.offset, "n": batches.n,
                             "batch_size": batches.batch_size, "seed": batches.seed},
                    "loop": {"best": best, "final": final, "best_valid": best_valid, "final_valid": final_valid,
                             "best_step": best_step, "tokens": tokens, "tokens_dev": tokens_dev,
                             "loss_sum": loss_sum, "terms_sum": terms_sum, "n_in_window": n_in_window,
                             "train_seconds": now - t0 - eval_seconds, "window_seconds": now - window_start},
                    "method": method.state_dict(model),
                    "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
                    "rng": ckpt_io.rng_state(),
                }
                ck.save(step, tree)
            n_ckpt += 1
            last_ckpt = time.perf_counter()
            spent = last_ckpt - c0
            ckpt_seconds += spent
            eval_seconds += spent  # checkpoint time counts in neither speed nor train time
            window_start += spent
            if stop:
                progress.close()
                raise Stopped(f"stopped on request after step {step}; a checkpoint was written, re-run the "
                              f"same command to continue")
    progress.close()
    for cb in callbacks:
        guarded(lambda: cb.on_train_end(model, total_steps, logger))
    train_seconds = time.perf_counter() - t0 - eval_seconds
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _cpu_peak_rss()
    return LoopResult(final, best, train_seconds, tokens, total_steps, peak, resumed_from=resume["step"] if resume else None,
                      checkpoints=n_ckpt, checkpoint_seconds=ckpt_seconds, final_valid=final_valid,
                      best_valid=best_valid, best_step=best_step,
                      best_selected_on="validation" if valid_enc is not None else "test")


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


def _cpu_peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _progress(total: int, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    # leave=None: kept on screen alone, cleared when it sits under a sweep's bar
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True,
                leave=None)
