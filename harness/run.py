"""``run(cfg, run_dir) -> summary``: one configuration, from validation to the final record.

Everything that can be checked without weights is checked first (config, data files, schedule, target
modules on a meta-device model); only then is the run folder marked ``running`` and the model loaded.

A run folder that already holds a record of the same configuration (same config hash) is not started
blindly (:func:`attempt_for`): ``done`` → skipped (``train.force=true`` runs it again); crashed, killed
or failed → another attempt, continuing from the latest checkpoint (``train.resume=auto``) or from
scratch; a record of a *different* configuration is never overwritten without ``train.force=true``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import re
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from harness import checkpoint as ckpt_io
from harness import distributed
from harness.config import RunConfig, config_hash, effective_lr, to_dict, to_typed, validate
from harness.errors import ConfigError, HarnessError
from harness.families import Family, MatrixRef, family_for, resolve_targets
from harness.loop import Checkpointing, LoopData, LoopResult, train
from harness.methods import METHODS, get_method
from harness.methods.base import Method
from harness.models import load_model, load_tokenizer, meta_model, model_config, position_limit
from harness.problems import ProblemType, get_problem
from harness.redact import install_log_filter, redact
from harness.record import (CONFIG_FILE, DONE, ERROR_FILE, METRICS_FILE, REPLACING, RUN_FILE, RUNNING, SUMMARY_FILE,
                            BadRecord, read_run, read_summary, temp_name, write_json_atomic, write_text_atomic)
from harness.run_folder import PROBE_PREFIX, RunFolder, folder_problem, remove_entry
from harness.run_record import RunRecord, environment
from harness.snapshots import SnapshotCallback, select
from harness.speed import check_request, graphable_reason
from harness.summaries import configure_output
from harness.tasks import TaskData, TrainBatches, load_task, padding_share, task_problem
from harness.tracking import (JsonlLogger, MetricLogger, MultiLogger, NullLogger, WandbLogger, run_name,
                              truncate_metrics)

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
    problem: ProblemType  # the task's problem type (harness/problems/), configured for this run


def plan(cfg: DictConfig | RunConfig | dict) -> Plan:
    """Validate everything that needs no weights; raises ConfigError / DataError."""
    typed = cfg if isinstance(cfg, RunConfig) else to_typed(cfg)
    validate(typed)
    problem = get_problem(task_problem(typed.task))
    data = load_task(typed.task, seed=typed.seed, problem=problem)
    t = typed.train
    if t.max_steps is not None:
        total = t.max_steps
    else:
        total = max(1, math.ceil(t.epochs * math.ceil(len(data.train) / t.batch_size) / t.grad_accum))
    typed.task.problem = data.problem  # the record holds the problem that trains (the task's own for GLUE)
    method = get_method(typed.method.name)(typed.method, total)
    method.validate_run()
    if not problem.model_loss and method.adds_to_model_loss:
        raise ConfigError(f"method={typed.method.name}: adds its terms to the model's own loss, which problem type "
                          f"'{problem.name}' does not use (model_loss = False); use another method or problem type")
    conf = model_config(typed.model, data.num_labels, problem.name)
    problem.configure(typed.task, conf)
    _check_length(typed, conf)
    family = family_for(conf.model_type)
    meta = meta_model(conf, problem.name)
    targets = resolve_targets(meta, family, list(typed.method.targets), typed.method.layers)
    method.validate_targets(targets)
    _check_rank(method, meta, targets)
    if typed.snapshot.enabled:
        select(targets, typed.snapshot)  # snapshot.types/layers keep at least one matrix
    if data.valid is not None and len(data.valid) < MIN_SELECTION_EXAMPLES:
        log.warning("task.validation_fraction: the validation split has %d example(s), below the %d that selection "
                    "on it needs to mean something; the best step chosen on it is noise (raise "
                    "task.validation_fraction or task.max_eval_samples)", len(data.valid), MIN_SELECTION_EXAMPLES)
    return Plan(typed, data, total, method, conf, family, targets, problem)


#: the fewest validation examples a choice made on them (a learning rate, the best step) is taken from
MIN_SELECTION_EXAMPLES = 32


def _check_length(c: RunConfig, conf: Any) -> None:
    """``model.max_length``, and the length a batch is padded up to (``train.pad_to_multiple``; multiples of 8
    on the static-shape paths ``train.compile=graphs|model``), within the model's positions (ConfigError)."""
    limit = position_limit(conf)
    if limit is None:
        return
    length = c.model.max_length
    if length > limit:
        raise ConfigError(f"model.max_length: {length} exceeds the {limit} positions of {c.model.name} "
                          f"({conf.model_type}); pass model.max_length={limit} or less")
    align = c.train.pad_to_multiple or (8 if c.train.compile in ("graphs", "model") else 1)
    padded = -(-length // align) * align
    if padded > limit:
        key = "train.pad_to_multiple" if c.train.pad_to_multiple else "train.compile"
        raise ConfigError(f"{key}: batches of model.max_length={length} are padded to {padded}, over the {limit} "
                          f"positions of {c.model.name}; pass model.max_length={limit // align * align} or a "
                          f"{key} that divides {limit}")


def _check_rank(method: Method, meta: torch.nn.Module, targets: list[MatrixRef]) -> None:
    """A method whose update has a rank per matrix (``Method.rank_key``) asks for at most min(d_in, d_out) of
    the smallest adapted matrix (shapes from the meta-device model); ConfigError otherwise."""
    key = method.rank_key
    if key is None or not targets:
        return
    r = getattr(method.cfg, key)
    shapes = {t.name: tuple(meta.get_submodule(t.name).weight.shape) for t in targets}
    name, shape = min(shapes.items(), key=lambda kv: min(kv[1]))
    if r > min(shape):
        raise ConfigError(f"method.{key}: {r} is above the rank of the adapted matrix {name} ({shape[0]}x{shape[1]}: "
                          f"at most {min(shape)}); pass method.{key}={min(shape)} or less")


def check_paths(c: RunConfig, run_dir: Path, key: str = "hydra.run.dir") -> None:
    """Every folder the run will write can be created and written, checked before any weight loads: the run
    folder (``key`` names its setting; W&B writes into it too) and the W0 store of its snapshots
    (``snapshot.w0_store``). ConfigError naming the setting and the fix."""
    from harness.w0store import resolve_store

    places = [(key, Path(run_dir))]
    if c.snapshot.enabled:
        store = resolve_store(c.snapshot.w0_store, Path(run_dir))
        if store is not None:
            places.append(("snapshot.w0_store", store))
    for setting, path in places:
        bad = folder_problem(Path(os.path.abspath(path)), PROBE_PREFIX)
        if bad is None:
            continue
        why = {"file": f"{bad.probe} is a file, not a folder",
               "long": f"the name '{bad.name[:40]}...' has {bad.size} bytes, over the limit of {bad.limit}",
               "unwritable": f"cannot write in {bad.probe} ({bad.reason})"}[bad.kind]
        fix = "snapshot.w0_store=<a writable folder> (or run: a copy in each run)" \
            if setting == "snapshot.w0_store" else f"{setting}=<a writable folder>"
        raise ConfigError(f"{setting}: {path}: {why}; pass {fix}")


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


class _StopRequest:
    """SIGTERM (a preemption notice): inside the training loop, finish the step, write a checkpoint and stop
    (:class:`harness.loop.Stopped`); elsewhere, stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self.in_loop = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.in_loop:
            raise _Terminated(f"terminated by signal {signum}")


#: files and folders a run writes into its folder (besides run.json, Hydra's .hydra/ and log, wandb/ and the
#: folder its method saves into: :func:`save_dirs`)
#: the folder of a generative task's saved generations: <split>_step<NNNNNNN>.jsonl, one row per example
GENERATIONS = "generations"

RUN_ARTIFACTS = (METRICS_FILE, SUMMARY_FILE, ERROR_FILE, CONFIG_FILE, "snapshots", ckpt_io.DIR, GENERATIONS,
                 *sorted({o for m in METHODS.values() for o in m.outputs}))


def save_dirs() -> tuple[str, ...]:
    """The folders the registered methods save their adapter or model into (:meth:`Method.save_dir`)."""
    return tuple(sorted({m.save_dir() for m in METHODS.values()}))


def planned_outputs(c: RunConfig) -> set[str]:
    """The names this run may write into its folder (recorded in its manifest before any is written)."""
    names = {RUN_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, ERROR_FILE, ckpt_io.DIR, GENERATIONS}
    if c.snapshot.enabled:
        names.add("snapshots")
    method = get_method(c.method.name)
    if c.train.save_model:
        names.add(method.save_dir())
    names.update(method.outputs)
    if c.tracking.wandb and c.tracking.mode != "disabled":
        names.add("wandb")
    return names


@dataclass
class Attempt:
    """What to do in a run folder: ``new`` run, ``skip`` a done one, ``restart`` from scratch, ``resume``."""

    kind: str
    previous: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[ckpt_io.Loaded] = None
    summary: Optional[dict[str, Any]] = None


def attempt_for(run_dir: Path, c: RunConfig) -> Attempt:
    """Decide from the folder's run.json what this run does there (see the module docstring).

    Raises ConfigError when the folder holds another configuration's record (without ``train.force``) or
    when a live process on this host is running this run now.
    """
    if not (run_dir / RUN_FILE).is_file():
        return Attempt("new")
    force = c.train.force
    try:
        prev = read_run(run_dir)
    except (OSError, BadRecord) as e:
        if not force:
            raise ConfigError(f"{e}; this run's record is damaged: repair it, or pass train.force=true to run it "
                              f"again from scratch in this folder") from None
        log.warning("%s; running it again from scratch (train.force=true)", e)
        return Attempt("restart")
    h, old = config_hash(c), prev.get("config_hash")
    status = prev.get("status")
    if old != h:
        if not force:
            raise ConfigError(
                f"{run_dir}: holds a run of another configuration (config hash {old}, this one {h}); use another "
                f"folder (hydra.run.dir=... or hydra.sweep.dir=...) or pass train.force=true to replace it")
        return Attempt("restart")  # another run's record: replaced, its attempts not carried over
    if status in (RUNNING, REPLACING):
        if prev.get("host") in (None, socket.gethostname()):
            raise ConfigError(
                f"{run_dir}: process {prev.get('pid')} on this host is running this run now; wait for it to end "
                f"or stop it (kill {prev.get('pid')}) before running it again")
        log.warning("%s: run.json says %s on host %s, which cannot be checked from here; taking it over",
                    run_dir, status, prev.get("host"))
    if status == DONE and not force:
        try:
            summary, why = read_summary(run_dir), f"{SUMMARY_FILE} is missing"
        except (OSError, BadRecord) as e:
            summary, why = {}, str(e)
        if summary:
            return Attempt("skip", prev, summary=summary)
        log.warning("%s: says done but its summary is unusable (%s); running it again", run_dir, why)
        return Attempt("restart", prev)
    if force or status == DONE or c.train.resume == "never":
        return Attempt("restart", prev)
    ck = ckpt_io.latest(run_dir)
    return Attempt("resume", prev, checkpoint=ck) if ck is not None else Attempt("restart", prev)


def _clear(run_dir: Path, keep_for_resume: bool, owned: set[str]) -> None:
    """Remove an earlier attempt's outputs (all of them; or, when resuming, only its final outputs — the
    checkpoint, the metrics up to it, the snapshots and AdaLoRA records are cut back by their owners), only
    those the harness wrote (``owned``: the folder's manifest entries)."""
    names = (SUMMARY_FILE, ERROR_FILE, *save_dirs()) if keep_for_resume else (*RUN_ARTIFACTS, *save_dirs())
    for name in (n for n in names if n in owned):
        try:
            remove_entry(run_dir, name)  # never through a link (harness.run_folder)
        except OSError as e:
            raise OSError(e.errno, f"could not remove {name} of the earlier attempt ({e.strerror}); the record says "
                                   f"{REPLACING!r} until it is removed: remove it yourself or choose a new "
                                   f"hydra.run.dir", e.filename) from None


def describe_failure(e: BaseException, run_dir: Optional[Path] = None) -> str:
    """One line for run.json: the error, with the fix where it is known (a full disk)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" while writing {e.filename}" if e.filename else (f" while writing into {run_dir}" if run_dir else "")
        return (f"disk full{where} ({errno.errorcode.get(e.errno, e.errno)}): free space or move the run "
                f"(hydra.run.dir=...), then re-run the same command to continue from the last checkpoint; files "
                f"written before are intact")
    text = redact(" ".join(str(e).split()))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run(cfg: DictConfig | RunConfig | dict, run_dir: Path, *, name: Optional[str] = None,
        group: Optional[str] = None, job_num: Optional[int] = None, foreign_ok: tuple[str, ...] = (),
        tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train one configuration; write run.json, metrics.jsonl, summary.json and the adapter into ``run_dir``.

    A run already done in ``run_dir`` returns its recorded summary with ``"skipped": True``. The folder is
    locked for the run's life and checked first (:class:`harness.run_folder.RunFolder`); ``foreign_ok``: names
    others wrote into it this run (Hydra's ``.hydra/`` and job log). ``name``: default
    :func:`harness.tracking.run_name` of a composed config; ``tags``: W&B tags besides task and model (the preset).
    """
    install_log_filter()
    if name is None and not isinstance(cfg, RunConfig):
        name = run_name(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg)
    p = plan(cfg)
    c = p.cfg
    configure_output(c.train.verbose)
    ctx = distributed.from_env()
    run_dir = Path(run_dir)
    if ctx.main:
        check_paths(c, run_dir, "hydra.sweep.dir" if job_num is not None else "hydra.run.dir")
    if ctx.enabled:
        if c.train.batch_size % ctx.world:
            raise ConfigError(f"train.batch_size: the global batch {c.train.batch_size} must divide by the "
                              f"{ctx.world} processes of torchrun")
        run_dir = Path(distributed.broadcast_str(ctx, str(run_dir)))
        device = torch.device("cuda", ctx.local_rank) if c.train.device != "cpu" and torch.cuda.is_available() \
            else torch.device("cpu")
    else:
        device = pick_device(c.train.device, job_num)
    check_request(c.train.compile, device_type=device.type,
                  graphable=graphable_reason(distributed=ctx.enabled, grad_accum=c.train.grad_accum,
                                             gradient_checkpointing=c.train.gradient_checkpointing))
    attempt: Optional[Attempt] = None
    folder: Optional[RunFolder] = None
    if ctx.main:
        try:
            folder = RunFolder.claim(run_dir, planned_outputs(c), ignore=foreign_ok)
            attempt = attempt_for(run_dir, c)
        except HarnessError as e:
            if folder is not None:
                folder.release()
            distributed.broadcast_str(ctx, "error")
            raise e
        verdict = attempt.kind if attempt.checkpoint is None else f"resume:{attempt.checkpoint.path}"
    verdict = distributed.broadcast_str(ctx, verdict if ctx.main else "")
    if not ctx.main:  # other ranks follow rank 0's decision; only rank 0 keeps records
        if verdict in ("skip", "error"):
            return {}
        resume = ckpt_io.read(Path(verdict.split(":", 1)[1])) if verdict.startswith("resume:") else None
        return _train_and_record(p, run_dir, device, NullLogger(), ctx, resume=resume)
    assert attempt is not None and folder is not None
    try:
        return _run_claimed(p, folder, attempt, device, ctx, name=name, group=group, tags=tags)
    finally:
        folder.release()


def _run_claimed(p: Plan, folder: RunFolder, attempt: Attempt, device: torch.device, ctx: distributed.DistContext,
                 *, name: Optional[str], group: Optional[str], tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Rank 0's part of :func:`run` in its locked folder: skip, or clean, record and train."""
    c, run_dir = p.cfg, folder.run_dir
    if attempt.kind == "skip":
        log.info("%s: already done (config hash %s); skipped — pass train.force=true to run it again",
                 run_dir, config_hash(c))
        return {**(attempt.summary or {}), "skipped": True}
    resume = attempt.checkpoint
    folder.begin(planned_outputs(c))
    record = RunRecord(run_dir)
    resolved = to_dict(c)
    fields = dict(
        name=name or c.method.name, group=group, method=c.method.name, **p.method.display(),
        task=c.task.name, model=c.model.name,
        seed=c.seed, budget=c.method.budget(), config_hash=config_hash(c), config=resolved, total_steps=p.total_steps,
        environment=environment(str(device)), data_source=p.data.source, world_size=ctx.world,
        data_split=p.data.split, lr=effective_lr(c), save_dir=p.method.save_dir(),
    )
    logger: MetricLogger = NullLogger()
    stop = _StopRequest()
    old_handler = _install_sigterm(stop)
    try:  # from the first write on, a failure leaves run.json "failed" and error.txt
        _begin_attempt(record, folder, attempt, fields)
        write_json_atomic(run_dir / CONFIG_FILE, resolved)
        jsonl = JsonlLogger(run_dir / METRICS_FILE)
        sinks: list[MetricLogger] = [jsonl]
        if c.tracking.wandb and c.tracking.mode != "disabled":
            wb = WandbLogger(c.tracking, run_dir, name=name or c.method.name, group=group, job_type=c.method.name,
                             config=resolved, run_id=attempt.previous.get("wandb_id") if resume else None,
                             tags=(c.task.name, c.model.name, *tags))
            if wb.run_id:
                sinks.append(wb)
                record.update(wandb_id=wb.run_id, wandb={"status": "on", "mode": c.tracking.mode})
            else:  # the run goes on with its local records; the record says why W&B has none
                record.update(wandb={"status": "failed", "mode": c.tracking.mode, "error": wb.error})
        logger = MultiLogger(sinks)

        def save_checkpoint(step: int, tree: dict[str, Any]) -> None:
            jsonl.sync()  # the metrics up to this step are on disk before the checkpoint that claims them
            saved = ckpt_io.save(run_dir, step, tree)
            record.checkpointed(step)
            log.debug("checkpoint after step %d: %.1f MB in %.3f s", step, saved.bytes / 1e6, saved.seconds)

        summary = _train_and_record(p, run_dir, device, logger, ctx, resume=resume, save=save_checkpoint,
                                    stop=stop)
    except BaseException as e:
        reason = describe_failure(e, run_dir)
        log.error("run failed: %s", reason)
        try:
            record.failed(reason)
            write_text_atomic(run_dir / ERROR_FILE, traceback.format_exc())
        except OSError as e2:  # e.g. the disk is still full: the record then reads as crashed
            log.error("could not record the failure in %s: %s", run_dir, e2)
        logger.close(exit_code=1)
        try:
            folder.finish()  # after the loggers' last writes (wandb/)
        except OSError as e2:
            log.error("could not list the run's files in %s: %s", run_dir, e2)
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    logger.summary(summary)
    saved = run_dir / p.method.save_dir()
    if saved.is_dir():
        logger.log_model(saved)
    logger.close()
    record.data.pop("checkpoint", None)
    record.done()
    ckpt_io.remove(run_dir)  # a finished run needs no checkpoint
    folder.finish()
    return summary


def save_rows(run_dir: Path, step: int, split: str, rows: list[dict[str, Any]]) -> None:
    """An evaluation's per-example rows (id, generation, extracted answer, answer, score) as
    ``generations/<split>_step<NNNNNNN>.jsonl`` (atomic)."""
    folder = run_dir / GENERATIONS
    folder.mkdir(exist_ok=True)
    write_text_atomic(folder / f"{split}_step{step:07d}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _problem_entries(p: Plan, result: Any) -> dict[str, Any]:
    """Summary entries of the problem type: its name, the chance level, the base model's dev metrics (step 0),
    forgetting (:func:`forgetting`) and the evaluation's speed."""
    return {"problem": p.problem.name, "chance": p.problem.chance(p.data.dev.labels, p.data.main_metric),
            **{f"base/{k}": v for k, v in result.initial_eval.items()},
            **forgetting(result.probes_start, result.probes_end),
            **{f"eval_{k}": v for k, v in result.eval_perf.items()}}


def _encode(p: Plan, tokenizer: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Every split tokenized once by the problem type: train, dev, validation (or None), the probes."""
    enc = lambda split: p.problem.encode(split, tokenizer, p.cfg.model.max_length)  # noqa: E731
    valid = enc(p.data.valid) if p.data.valid is not None else None
    return enc(p.data.train), enc(p.data.dev), valid, {k: enc(v) for k, v in p.data.probes.items()}


def train_padding(enc: Any, batch_size: int, seed: int, grouped: bool) -> float:
    """The share of padding in the training stream's first epoch (at most 200 batches), each batch padded to its
    longest example (bucket and multiple rounding not counted)."""
    lengths = [len(x) for x in enc.input_ids]
    stream = TrainBatches(len(lengths), batch_size, seed, lengths if grouped else None)
    return padding_share(lengths, stream, min(200, -(-len(lengths) // batch_size)))


def forgetting(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """Summary entries of the probes: ``forget/<probe>/<metric>/base`` (step 0), ``…/final`` and ``…/change``
    (final − base: for the text sample's loss, the increase in nats per token)."""
    out: dict[str, float] = {}
    for key in sorted(start.keys() & end.keys()):
        out.update({f"forget/{key}/base": start[key], f"forget/{key}/final": end[key],
                    f"forget/{key}/change": end[key] - start[key]})
    return out


def _begin_attempt(record: RunRecord, folder: RunFolder, attempt: Attempt, fields: dict[str, Any]) -> None:
    """Write this attempt's record. Another attempt in a used folder first says ``replacing`` (before anything
    is deleted, so an interruption leaves a record no reader takes for a result), then removes the earlier
    attempt's outputs (only manifest entries, never through a link), cuts metrics back to the checkpoint it
    resumes from, and only then says ``running``."""
    run_dir, resume = folder.run_dir, attempt.checkpoint
    if attempt.kind == "new":
        record.start(**fields)
        return
    if attempt.previous:
        record.restart(attempt.previous, resumed_from=resume.step if resume else None, status=REPLACING, **fields)
    else:
        record.start(status=REPLACING, **fields)
    _clear(run_dir, keep_for_resume=resume is not None, owned=folder.owned - {RUN_FILE})
    if resume is not None:
        dropped = truncate_metrics(run_dir / METRICS_FILE, resume.step)
        log.info("%s: resuming after step %d (attempt %d; %d metric rows after it dropped)", run_dir, resume.step,
                 int(attempt.previous.get("attempt", 1)) + 1, dropped)
    else:
        log.info("%s: earlier attempt %s (%s); starting over", run_dir, attempt.previous.get("status", "unreadable"),
                 attempt.previous.get("error") or "no checkpoint to continue from")
    record.running()


def _install_sigterm(handler: Any) -> Any:
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (some launchers)
        return None


def _save_atomic(method: Method, model: torch.nn.Module, out: Path) -> None:
    """``method.save`` into a temporary folder, then renamed into place: no half-saved adapter/model."""
    run_dir = out.parent
    tmp, old = temp_name(out), temp_name(out, "old")
    remove_entry(run_dir, tmp.name)
    try:
        method.save(model, tmp)
    except BaseException:
        remove_entry(run_dir, tmp.name)
        raise
    if os.path.lexists(out):
        os.replace(out, old)
    os.replace(tmp, out)
    remove_entry(run_dir, old.name)


def speed_up(model: torch.nn.Module, t: Any, family: Family, device: torch.device, *, adapters: bool) -> None:
    """Speed options. With bf16 on CUDA: frozen weights in bf16 (adapter methods) and PEFT's input casting
    to the adapter dtype off (adapter matmuls in bf16 under autocast, fp32 master weights). On any device:
    ``torch.compile`` of each transformer layer (``train.compile=layers``; the loop compiles the whole model for
    ``model`` and records CUDA graphs for ``graphs``, harness/speed.py)."""
    if device.type == "cuda" and adapters and t.bf16:
        if t.bf16_frozen:
            for prm in model.parameters():
                if not prm.requires_grad and prm.dtype == torch.float32:
                    prm.data = prm.data.to(torch.bfloat16)
        if not t.cast_adapter_inputs:
            for mod in model.modules():
                if hasattr(mod, "cast_input_dtype_enabled"):  # PEFT's BaseTunerLayer
                    mod.cast_input_dtype_enabled = False
    kw = {"mode": t.compile_mode} if t.compile_mode else {}
    if t.compile == "layers":
        pattern = re.compile(family.layer_prefix[:-2] + "$")  # "...layer.(\d+)\." -> "...layer.(\d+)$"
        for name, mod in model.named_modules():
            if pattern.match(name):
                mod.compile(**kw)


def _train_and_record(p: Plan, run_dir: Path, device: torch.device, logger: MetricLogger,
                      ctx: distributed.DistContext, *, resume: Optional[ckpt_io.Loaded] = None,
                      save: Any = None, stop: Optional[_StopRequest] = None) -> dict[str, Any]:
    c = p.cfg
    seed_everything(c.seed)
    tokenizer = load_tokenizer(c.model)
    problem = p.problem
    train_enc, dev_enc, valid_enc, probes = _encode(p, tokenizer)
    model = load_model(c.model, p.model_conf, problem.name)
    if c.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = p.method.wrap(model, p.targets, problem.head(p.family), task_type=problem.peft_task_type).to(device)
    speed_up(model, c.train, p.family, device, adapters=p.method.frozen_base)
    p.method.run_dir = run_dir if ctx.main else None  # methods that keep their own records write them here
    n_trainable = p.method.trained_parameters(model)
    log.info("%s on %s/%s: %d trainable parameters, %d adapted matrices, %d steps on %s", c.method.name,
             c.model.name, c.task.name, n_trainable, len(p.targets), p.total_steps, device)
    snapshots = (SnapshotCallback(c.snapshot, p.targets, run_dir / "snapshots", total_steps=p.total_steps,
                                  method=p.method) if c.snapshot.enabled and ctx.main else None)
    t_start = time.time()
    checkpointing = Checkpointing(every=c.train.checkpoint_every, minutes=c.train.checkpoint_minutes, save=save,
                                  resume=resume.tree if resume is not None else None,
                                  stop=(lambda: stop.requested) if stop is not None else (lambda: False))
    if stop is not None:
        stop.in_loop = True
    try:
        data = LoopData(train_enc, dev_enc, tokenizer.pad_token_id, problem, p.data.metrics, p.data.main_metric,
                        valid=valid_enc, probes=probes, on_rows=lambda step, split, rows: save_rows(run_dir, step,
                                                                                                  split, rows))
        result = train(model, p.method, data, c.train, total_steps=p.total_steps, lr=effective_lr(c), seed=c.seed,
                       device=device, logger=logger, callbacks=[snapshots] if snapshots is not None else [],
                       dist_ctx=ctx, checkpointing=checkpointing)
    finally:
        if stop is not None:
            stop.in_loop = False
    extra = p.method.finish(model)
    if not ctx.main:
        return {}
    if c.train.save_model:
        _save_atomic(p.method, model, run_dir / p.method.save_dir())
    summary = {**_summary(p, model, result, n_trainable=n_trainable, device=device, train_enc=train_enc,
                          wall_seconds=time.time() - t_start),
               **extra, **(snapshots.summary() if snapshots is not None else {})}
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary


def _summary(p: Plan, model: torch.nn.Module, result: LoopResult, *, n_trainable: int, device: torch.device,
             train_enc: Any, wall_seconds: float) -> dict[str, Any]:
    """summary.json's entries from the plan and what the loop measured (the method's and the snapshots' own
    entries are added by the caller)."""
    c = p.cfg
    return {
        "method": c.method.name, "task": c.task.name, "model": c.model.name, "seed": c.seed,
        "budget": c.method.budget(), **p.method.display(),
        "main_metric": p.data.main_metric, "save_dir": p.method.save_dir(),
        "main_metric_value": result.final_eval[p.data.main_metric],
        **_problem_entries(p, result),
        **{f"eval/{k}": v for k, v in result.final_eval.items()},
        **{f"valid/{k}": v for k, v in result.final_valid.items()},
        # dev metrics at the step chosen on validation (best_selected_on=validation), or on dev itself ("test":
        # selection on the reported set, kept for old records; not a fair number)
        **{f"best/{k}": v for k, v in result.best_eval.items()},
        **{f"best_valid/{k}": v for k, v in result.best_valid.items()},
        "best_step": result.best_step,
        "best_selected_on": result.best_selected_on,
        "lr": effective_lr(c),
        "lr_scale": c.train.lr_scale,
        "split": p.data.split,
        # chance level of the dev main metric (analysis.compare.not_learned flags runs within chance of it)
        "dev_majority_rate": (float(np.bincount(p.data.dev.labels.astype(np.int64)).max() / len(p.data.dev))
                              if p.data.problem == "classification" and len(p.data.dev) else None),
        "dev_examples": len(p.data.dev),
        "trainable_params": n_trainable,
        "effective_params": p.method.effective_parameters(model),
        "adapted_matrices": len(p.targets),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall_seconds,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens / result.train_seconds if result.train_seconds > 0 else None,
        "train_padding_share": train_padding(train_enc, c.train.batch_size, c.seed, c.train.group_by_length),
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_max_rss",
        "resumed_from": result.resumed_from,
        "checkpoints": result.checkpoints,
        "checkpoint_seconds": result.checkpoint_seconds,
        "compile_seconds": result.compile_seconds,
        "speed": {**result.speed.record(), "graphs": result.graphs, "graphs_failed": result.graphs_failed},
    }

