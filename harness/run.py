"""``run(cfg, run_dir) -> summary``: one configuration, from validation to the final record.

Everything that can be checked without weights is checked first (config, data files, schedule, target
modules on a meta-device model); only then is the run folder marked ``running`` and the model loaded.
"""

from __future__ import annotations

import logging
import math
import random
import re
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from harness import distributed
from harness.config import RunConfig, config_hash, to_dict, to_typed, validate
from harness.errors import ConfigError
from harness.families import Family, MatrixRef, family_for, resolve_targets
from harness.loop import train
from harness.methods import get_method
from harness.methods.base import Method, trainable_parameters
from harness.models import load_model, load_tokenizer, meta_model, model_config
from harness.run_record import RunRecord, environment, write_json_atomic
from harness.snapshots import SnapshotCallback
from harness.tasks import TaskData, encode, load_task
from harness.tracking import JsonlLogger, MetricLogger, MultiLogger, NullLogger, WandbLogger

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated run: config, data, method and adapted matrices, before any weight is loaded."""

    cfg: RunConfig
    data: TaskData
    total_steps: int
    method: Method
    model_conf: Any
    family: Family
    targets: list[MatrixRef]


def plan(cfg: DictConfig | RunConfig | dict) -> Plan:
    """Validate everything that needs no weights; raises ConfigError / DataError."""
    typed = cfg if isinstance(cfg, RunConfig) else to_typed(cfg)
    validate(typed)
    data = load_task(typed.task, seed=typed.seed)
    t = typed.train
    if t.max_steps is not None:
        total = t.max_steps
    else:
        total = max(1, math.ceil(t.epochs * math.ceil(len(data.train) / t.batch_size) / t.grad_accum))
    method = get_method(typed.method.name)(typed.method, total)
    method.validate_run()
    conf = model_config(typed.model, data.num_labels, data.problem)
    family = family_for(conf.model_type)
    targets = resolve_targets(meta_model(conf), family, list(typed.method.targets), typed.method.layers)
    return Plan(typed, data, total, method, conf, family, targets)


def pick_device(name: str, job_num: Optional[int] = None) -> torch.device:
    """``auto`` -> cuda (job ``n`` of a parallel sweep on GPU ``n mod #GPUs``) when available, else cpu."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated(f"terminated by signal {signum}")


def run(cfg: DictConfig | RunConfig | dict, run_dir: Path, *, name: Optional[str] = None,
        group: Optional[str] = None, job_num: Optional[int] = None) -> dict[str, Any]:
    """Train one configuration; write run.json, metrics.jsonl, summary.json and the adapter into ``run_dir``."""
    p = plan(cfg)
    c = p.cfg
    ctx = distributed.from_env()
    if ctx.enabled:
        if c.train.batch_size % ctx.world:
            raise ConfigError(f"train.batch_size: the global batch {c.train.batch_size} must divide by the "
                              f"{ctx.world} processes of torchrun")
        run_dir = Path(distributed.broadcast_str(ctx, str(run_dir)))
        device = torch.device("cuda", ctx.local_rank) if c.train.device != "cpu" and torch.cuda.is_available() \
            else torch.device("cpu")
        if not ctx.main:
            return _train_and_record(p, run_dir, device, NullLogger(), ctx)
    else:
        device = pick_device(c.train.device, job_num)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(run_dir)
    resolved = to_dict(c)
    record.start(
        name=name or c.method.name, group=group, method=c.method.name, task=c.task.name, model=c.model.name,
        seed=c.seed, config_hash=config_hash(c), config=resolved, total_steps=p.total_steps,
        environment=environment(str(device)), data_source=p.data.source, world_size=ctx.world,
    )
    write_json_atomic(run_dir / "config.json", resolved)
    sinks: list[MetricLogger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    if c.tracking.wandb and c.tracking.mode != "disabled":
        sinks.append(WandbLogger(c.tracking, run_dir, name=name or c.method.name, group=group,
                                 job_type=c.method.name, config=resolved))
    logger = MultiLogger(sinks)
    old_handler = _install_sigterm()
    try:
        summary = _train_and_record(p, run_dir, device, logger, ctx)
    except BaseException as e:
        record.failed(f"{type(e).__name__}: {e}")
        (run_dir / "error.txt").write_text(traceback.format_exc())
        logger.close(exit_code=1)
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    logger.summary(summary)
    logger.close()
    record.done()
    return summary


def _install_sigterm() -> Any:
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (some launchers)
        return None


def speed_up(model: torch.nn.Module, t: Any, family: Family, device: torch.device, *, adapters: bool) -> None:
    """GPU options: frozen weights in bf16 (adapter methods), per-layer ``torch.compile``."""
    if device.type != "cuda":
        return
    if adapters and t.bf16 and t.bf16_frozen:
        for prm in model.parameters():
            if not prm.requires_grad and prm.dtype == torch.float32:
                prm.data = prm.data.to(torch.bfloat16)
    if t.compile:
        pattern = re.compile(family.layer_prefix[:-2] + "$")  # "...layer.(\d+)\." -> "...layer.(\d+)$"
        for name, mod in model.named_modules():
            if pattern.match(name):
                mod.compile()


def _train_and_record(p: Plan, run_dir: Path, device: torch.device, logger: MetricLogger,
                      ctx: distributed.DistContext) -> dict[str, Any]:
    c = p.cfg
    seed_everything(c.seed)
    tokenizer = load_tokenizer(c.model)
    train_enc = encode(p.data.train, tokenizer, c.model.max_length)
    dev_enc = encode(p.data.dev, tokenizer, c.model.max_length)
    model = load_model(c.model, p.model_conf)
    if c.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = p.method.wrap(model, p.targets, p.family.head).to(device)
    speed_up(model, c.train, p.family, device, adapters=c.method.name != "full")
    p.method.run_dir = run_dir if ctx.main else None  # methods that keep their own records write them here
    n_trainable = trainable_parameters(model)
    log.info("%s on %s/%s: %d trainable parameters, %d adapted matrices, %d steps on %s", c.method.name,
             c.model.name, c.task.name, n_trainable, len(p.targets), p.total_steps, device)
    snapshots = (SnapshotCallback(c.snapshot, p.targets, run_dir / "snapshots", total_steps=p.total_steps,
                                  method=c.method.name) if c.snapshot.enabled and ctx.main else None)
    t_start = time.time()
    result = train(
        model, p.method, train_enc=train_enc, dev_enc=dev_enc, cfg=c.train, total_steps=p.total_steps,
        lr=c.train.lr or c.method.lr, seed=c.seed, device=device, pad_id=tokenizer.pad_token_id,
        problem=p.data.problem, metric_names=p.data.metrics, main_metric=p.data.main_metric, logger=logger,
        callbacks=[snapshots] if snapshots is not None else [], dist_ctx=ctx,
    )
    extra = p.method.finish(model)
    if not ctx.main:
        return {}
    if c.train.save_model:
        p.method.save(model, run_dir / ("model" if c.method.name == "full" else "adapter"))
    summary: dict[str, Any] = {
        "method": c.method.name, "task": c.task.name, "model": c.model.name, "seed": c.seed,
        "main_metric": p.data.main_metric,
        "main_metric_value": result.final_eval[p.data.main_metric],
        **{f"eval/{k}": v for k, v in result.final_eval.items()},
        **{f"best/{k}": v for k, v in result.best_eval.items()},
        "trainable_params": n_trainable,
        "effective_params": p.method.effective_parameters(model),
        "adapted_matrices": len(p.targets),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": time.time() - t_start,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens / result.train_seconds if result.train_seconds > 0 else None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss",
        **extra,
        **(snapshots.summary() if snapshots is not None else {}),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary

