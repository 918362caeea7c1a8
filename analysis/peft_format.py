"""PEFT ``method_comparison`` result files ↔ harness runs.

A PEFT result file (``method_comparison/<task>/results/<experiment>.json``) holds one run:

* ``run_info``: ``created_at``, ``total_time``, ``experiment_name`` (``<method>/<model>-<setting>``),
  ``peft_branch``, ``train_config`` (``model_id``, ``seed``, …), ``peft_config`` (``None`` for full FT);
* ``train_info``: ``accelerator_memory_{max,reserved_avg,reserved_99th}`` (bytes), ``train_time`` (s),
  ``file_size``, ``num_trainable_params``, ``status`` (success / failed / canceled), ``metrics`` (one
  dict per eval step with ``valid <metric>``, ``train loss``, ``tokens / sec`` …; the last one holds the
  ``test <metric>`` values, ``train total tokens`` and ``forgetting``: the increase of the loss per token on a
  fixed text sample over training, the base model's subtracted);
* ``meta_info``: model and data set revisions, ``package_info`` (versions), ``system_info``.

:func:`load_peft_results` maps such files to the runs frame of :func:`analysis.load.load_runs` (so the
same tables and plots work on them); :func:`peft_result` builds such a file from a harness run folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from analysis.load import Runs, load_metrics
from harness.record import (LEGACY_METHODS, RECORD_FILES, find_run_files, legacy_method, read_run, read_summary,
                            recorded_budget)

log = logging.getLogger(__name__)

#: PEFT's folders for results by status (``train_info.status``).
RESULT_DIRS = {"success": "results", "failed": "cancelled_results", "canceled": "cancelled_results"}

#: the harness metrics PEFT's ``accuracy`` stands for, first found wins: accuracy, else the exact match of a generated
#: answer (PEFT's MetaMathQA accuracy is the exact match of the final number, as the causal-LM problem type's)
ACCURACY_METRICS = ("accuracy", "exact_match")
#: PEFT's ``forgetting`` (the loss increase on a fixed text sample) in harness summary keys
FORGETTING_KEY = "forget/text/loss/change"

_TOP_KEYS = ("run_info", "train_info", "meta_info")


# --------------------------------------------------------------------------------------------- reading

def is_result_file(path: Path) -> bool:
    """True for a JSON file with PEFT's ``run_info`` / ``train_info`` / ``meta_info`` sections."""
    if path.suffix != ".json" or not path.is_file() or path.name in RECORD_FILES:
        return False
    try:
        with open(path) as f:
            head = f.read(4096)
    except OSError:
        return False
    return '"run_info"' in head  # train_info may come after a long peft_config (AdaLoRA's rank_pattern)


def find_result_files(path: str | Path) -> list[Path]:
    """PEFT result files at ``path`` (a file) or directly in / below it (a folder), sorted.

    Harness run folders (with ``run.json``) are not searched."""
    p = Path(path)
    if p.is_file():
        return [p] if is_result_file(p) else []
    run_dirs = {r.parent for r in find_run_files(p)}
    found = []
    for f in sorted(p.rglob("*.json")):
        rel = f.relative_to(p).parts
        if "wandb" in rel or run_dirs.intersection(f.parents):
            continue
        if is_result_file(f):
            found.append(f)
    return found


def read_result(path: str | Path) -> dict[str, Any]:
    """One PEFT result file as a dict (raises ValueError naming the file when sections are missing)."""
    path = Path(path)
    with open(path) as f:
        data = json.load(f)
    missing = [k for k in ("run_info", "train_info") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a PEFT result file (missing {', '.join(missing)})")
    return data


def method_of(peft_config: Optional[dict[str, Any]]) -> str:
    """Harness method name of a PEFT config (:func:`harness.record.legacy_method`: no peft_config is full
    fine-tuning, LoRA with use_dora is DoRA, …), else PEFT's type in lower case (``ia3``, ``loha``, …)."""
    if not peft_config:
        return str(legacy_method(None))
    t = str(peft_config.get("peft_type", "unknown"))
    return legacy_method(t, bool(peft_config.get("use_dora"))) or t.lower()


def _budget_keys(peft_config: dict[str, Any]) -> tuple[str, ...]:
    """Where a PEFT config holds its budget: AdaLoRA's final mean rank ``target_r`` first (PEFT's own key
    names), else ``r``."""
    return ("target_r", "r") if "target_r" in peft_config else ("r",)


def budget_of(peft_config: Optional[dict[str, Any]]) -> Optional[int]:
    """Mean final rank per matrix: AdaLoRA ``target_r``, else ``r`` where the method has one."""
    if not peft_config:
        return None
    for key in _budget_keys(peft_config):
        v = peft_config.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def variant_of(experiment_name: str, model_id: str, method: str, budget: Optional[int],
               task: Optional[str] = None) -> str:
    """What distinguishes an experiment beyond method, budget, task and seed:
    ``lora/llama-3.2-3B-rank32-lorafa`` → ``lorafa``; ``full-finetuning/llama-3.2-3B-lr_0.00001`` →
    ``lr_0.00001``; ``lora/minilm-sst2-rank8-seed0`` (exported by the harness, task sst2) → ``""``."""
    rest = experiment_name.split("/", 1)[-1]
    short = model_id.rsplit("/", 1)[-1]
    if rest.lower().startswith(short.lower()):
        rest = rest[len(short):]
    drop = {method.lower(), "default"} | ({f"rank{budget}"} if budget is not None else set())
    drop |= {task.lower()} if task else set()
    parts = [p for p in re.split(r"-(?=[A-Za-z])", rest.strip("-"))
             if p and p.lower() not in drop and not re.fullmatch(r"seed\d+", p)]
    return "-".join(parts)


def _final_metrics(train_info: dict[str, Any]) -> dict[str, Any]:
    """The last metrics entry (PEFT puts the test metrics there)."""
    ms = train_info.get("metrics") or []
    return ms[-1] if ms else {}


def result_row(data: dict[str, Any], *, path: str = "", task: str = "metamathqa") -> dict[str, Any]:
    """One PEFT result → one row of the runs frame (same columns as :func:`analysis.load.load_runs`).

    ``eval/<m>`` holds the final ``test <m>``; ``main_metric`` is ``accuracy`` where a test accuracy
    exists; ``peak_memory_bytes`` is ``accelerator_memory_max``; ``tokens_per_s`` is
    ``train total tokens / train_time``; ``effective_params`` equals ``num_trainable_params`` except
    for AdaLoRA, whose final ranks the files hold but not the matrix shapes (left empty there).
    ``task`` names the task unless the file names one (``train_config.task``, as harness exports do).
    Files written by :func:`peft_result` give back the harness's effective parameters and memory kind, and the
    summary entries kept in ``harness_info.summary`` (base scores, forgetting, speeds); PEFT's own ``forgetting``
    reads as :data:`FORGETTING_KEY`.
    """
    ri, ti, mi = data["run_info"], data["train_info"], data.get("meta_info", {})
    pc = ri.get("peft_config") or None
    tc = ri.get("train_config") or {}
    hi = data.get("harness_info") or {}
    method = method_of(pc)
    budget = hi["budget"] if "budget" in hi else budget_of(pc)  # a harness export names its run's budget
    model_id = tc.get("model_id", "")
    task = tc.get("task") or task
    final = _final_metrics(ti)
    tests = {k[len("test "):].replace(" ", "_"): v for k, v in final.items() if k.startswith("test ")}
    if hi.get("accuracy_from") and hi["accuracy_from"] != "accuracy":
        tests.pop("accuracy", None)  # written for PEFT's viewer: the harness's own metric is beside it
    main = hi.get("main_metric") if hi.get("main_metric") in tests else None
    main = main or ("accuracy" if "accuracy" in tests else (next(iter(tests)) if tests else None))
    status = ti.get("status", "unknown")
    trained = ti.get("num_trainable_params")
    train_time = ti.get("train_time")
    tokens = final.get("train total tokens")
    row: dict[str, Any] = {
        "run_dir": path,
        "status": "done" if status == "success" else status,
        "method": method,
        "task": task,
        "model": model_id,
        "seed": tc.get("seed"),
        "budget": budget,
        "variant": variant_of(str(ri.get("experiment_name", "")), model_id, method, budget, task),
        "config_hash": hi.get("config_hash"),
        "group": None,
        "device": (mi.get("system_info") or {}).get("accelerator") or (mi.get("system_info") or {}).get("gpu"),
        "source": "peft",
        "experiment_name": ri.get("experiment_name"),
        "created_at": ri.get("created_at"),
        "main_metric": main,
        "main_metric_value": tests.get(main) if main else None,
        **{f"eval/{k}": v for k, v in tests.items()},
        "trainable_params": trained,
        # a rank-allocating config (target_r): the files hold its final ranks but not the matrix shapes
        "effective_params": hi.get("effective_params", None if pc and "target_r" in pc else trained),
        "steps": final.get("step"),
        "train_seconds": train_time,
        "wall_seconds": ri.get("total_time"),
        "tokens": tokens,
        "tokens_per_s": tokens / train_time if tokens and train_time else None,
        "peak_memory_bytes": ti.get("accelerator_memory_max", ti.get("cuda_memory_max")),
        "peak_memory_kind": hi.get("peak_memory_kind") or "accelerator_memory_max",
        "memory_reserved_avg_bytes": ti.get("accelerator_memory_reserved_avg", ti.get("cuda_memory_reserved_avg")),
        "memory_reserved_99th_bytes": ti.get("accelerator_memory_reserved_99th", ti.get("cuda_memory_reserved_99th")),
        "file_size": ti.get("file_size"),
    }
    if "train loss" in final:
        row["train/loss"] = final["train loss"]
    return {**row, **_recorded_extras(final, hi)}


def _recorded_extras(final: dict[str, Any], hi: dict[str, Any]) -> dict[str, Any]:
    """The summary entries a harness export keeps in ``harness_info.summary`` (base scores, forgetting, generation
    speed); for PEFT's own files, its ``forgetting`` as :data:`FORGETTING_KEY`."""
    out: dict[str, Any] = {}
    if final.get("forgetting") is not None:
        out[FORGETTING_KEY] = final["forgetting"]
    out.update(hi.get("summary") or {})
    return out


def _accuracy(values: dict[str, Any]) -> Optional[float]:
    """PEFT's ``accuracy`` among harness metric values (:data:`ACCURACY_METRICS`), None when none is there."""
    return next((values[k] for k in ACCURACY_METRICS if values.get(k) is not None), None)


def load_peft_results(paths: Iterable[str | Path], *, task: str = "metamathqa",
                      include_unfinished: bool = False) -> Runs:
    """PEFT result files (or folders of them) → :class:`analysis.load.Runs` (rows as :func:`result_row`).

    Runs whose status is not ``success`` are skipped and listed unless ``include_unfinished``; of
    several files of one experiment the latest (``created_at``) is kept, as PEFT's own app does.
    """
    rows, skipped = [], []
    files = [f for p in paths for f in find_result_files(p)]
    for f in files:
        try:
            data = read_result(f)
            row = result_row(data, path=str(f.resolve()), task=task)
        except (OSError, ValueError, KeyError, TypeError) as e:
            skipped.append((f, f"unreadable PEFT result: {e}"))
            continue
        if row["status"] != "done" and not include_unfinished:
            err = data["run_info"].get("error_msg")
            skipped.append((f, f"status {row['status']}" + (f": {err}" if err else "")))
            continue
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        before = len(df)
        df = df.sort_values("created_at", kind="stable").drop_duplicates(
            ["experiment_name", "model", "method"], keep="last").sort_values("run_dir").reset_index(drop=True)
        if len(df) < before:
            log.info("kept the latest of repeated PEFT experiments: %d of %d files", len(df), before)
    return Runs(df, skipped)


def load_peft_metrics(path: str | Path) -> pd.DataFrame:
    """The step-wise metrics of one PEFT result in the shape of :func:`analysis.load.load_metrics`:
    ``step``, ``eval/<m>`` (PEFT's ``valid <m>``), ``test/<m>``, ``train/loss``, ``perf/tokens_per_s``."""
    ti = read_result(path)["train_info"]
    rows = []
    for m in ti.get("metrics") or []:
        row: dict[str, Any] = {"step": m.get("step")}
        for k, v in m.items():
            if k.startswith("valid "):
                row[f"eval/{k[6:].replace(' ', '_')}"] = v
            elif k.startswith("test "):
                row[f"test/{k[5:].replace(' ', '_')}"] = v
            elif k == "train loss":
                row["train/loss"] = v
            elif k == "tokens / sec":
                row["perf/tokens_per_s"] = v
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- writing

def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(float(ts), tz=_dt.timezone.utc).isoformat(timespec="seconds")


def saved_folder(rec: dict[str, Any]) -> str:
    """The run's adapter or model folder: recorded in run.json (``save_dir``, the method's own); records from
    before it was recorded: as the method saved then (:data:`harness.record.LEGACY_METHODS`), else ``adapter``."""
    legacy = LEGACY_METHODS.get(str(rec.get("method")), {})
    return str(rec.get("save_dir") or legacy.get("save_dir", "adapter"))


def _dir_size(p: Path) -> int:
    """Bytes of the saved weights (``*.safetensors`` / ``*.bin``) in ``p``; 0 when nothing was saved."""
    if not p.is_dir():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin"))


def experiment_name(record: dict[str, Any]) -> str:
    """``<method>/<model>-<task>-rank<budget>-seed<seed>`` (PEFT's ``<method>/<model>-<setting>``)."""
    budget = recorded_budget(record)
    setting = [str(record.get("task"))] + ([f"rank{budget}"] if budget is not None else []) + [f"seed{record.get('seed')}"]
    return f"{record.get('method')}/{record.get('model')}-" + "-".join(setting)


def peft_result(run_dir: str | Path) -> dict[str, Any]:
    """A harness run folder → a PEFT result dict (``run_info``, ``train_info``, ``meta_info``).

    The harness has no separate test split: the ``test <metric>`` entries are the final evaluation on
    the task's evaluation split (GLUE dev), the ``valid <metric>`` entries the periodic ones. Memory:
    ``accelerator_memory_max`` is the harness's peak (CUDA max allocated, or the CPU's max RSS on CPU
    runs); the harness measures no reserved average / 99th percentile, so those repeat the peak
    (``harness_info.memory_note`` says so). Extra harness fields live under ``harness_info``.
    """
    run_dir = Path(run_dir)
    rec = read_run(run_dir)  # validated (BadRecord names a damaged key); a dead running run reads as crashed
    summary = read_summary(run_dir)
    env = rec.get("environment", {})
    train_cfg = rec.get("config", {}).get("train", {})
    saved = run_dir / saved_folder(rec)
    batch = int(train_cfg.get("batch_size", 0) or 0) * int(train_cfg.get("grad_accum", 1) or 1)
    peak = summary.get("peak_memory_bytes")
    started, ended = rec.get("started"), rec.get("ended")
    return {
        "run_info": {
            "created_at": _iso(started),
            "total_time": (ended - started) if started and ended else summary.get("wall_seconds"),
            "experiment_name": experiment_name(rec),
            "peft_branch": "n/a (lora-harness run)",
            "train_config": _train_config(rec),
            "peft_config": _peft_config(rec, saved),
            "error_msg": rec.get("error") or "",
        },
        "train_info": {
            "accelerator_memory_reserved_avg": peak,
            "accelerator_memory_max": peak,
            "accelerator_memory_reserved_99th": peak,
            "train_time": summary.get("train_seconds"),
            "file_size": _dir_size(saved),
            "num_trainable_params": summary.get("trainable_params"),
            "num_total_params": summary.get("total_params"),
            "status": _status(rec),
            "metrics": _metric_rows(run_dir, summary, batch),
        },
        "meta_info": _meta_info(rec, env),
        "harness_info": {
            "run_dir": str(run_dir),
            "harness_version": env.get("harness"),
            "git": rec.get("git"),
            "config_hash": rec.get("config_hash"),
            "budget": recorded_budget(rec),
            "group": rec.get("group"),
            "effective_params": summary.get("effective_params"),
            "main_metric": summary.get("main_metric"),
            "peak_memory_kind": summary.get("peak_memory_kind"),
            "memory_note": "the harness records only the peak; reserved avg / 99th repeat it",
            "test_split": "the task's evaluation split (GLUE dev; a generated task's dev set)",
            "accuracy_from": _accuracy_source(summary),
            "summary": _recorded_summary(summary),
        },
    }


def _accuracy_source(summary: dict[str, Any]) -> Optional[str]:
    """The metric PEFT's ``test accuracy`` holds (:data:`ACCURACY_METRICS`), None when the run has none."""
    return next((k for k in ACCURACY_METRICS if summary.get(f"eval/{k}") is not None), None)


def _status(rec: dict[str, Any]) -> str:
    """PEFT's status of a run: success, canceled (still running, replaced, crashed, terminated) or failed."""
    status = {"done": "success", "running": "canceled", "replacing": "canceled",
              "crashed": "canceled"}.get(rec.get("status", ""), "failed")
    return "canceled" if "terminated" in str(rec.get("error", "")) else status


def _peft_config(rec: dict[str, Any], saved: Path) -> Optional[dict[str, Any]]:
    """The saved adapter's adapter_config.json; without one, rebuilt from the run's method config (None for
    full fine-tuning)."""
    adapter_cfg = saved / "adapter_config.json"
    if adapter_cfg.is_file():
        return json.loads(adapter_cfg.read_text())
    legacy = LEGACY_METHODS.get(str(rec.get("method")), {})
    if "peft_type" in legacy and legacy["peft_type"] is None:  # full fine-tuning: no PEFT config
        return None
    cfg = rec.get("config", {})
    return {"peft_type": legacy.get("peft_type") or str(rec.get("method")).upper(),
            **{k: v for k, v in cfg.get("method", {}).items() if k not in ("name", "lr", "targets")},
            "use_dora": bool(legacy.get("use_dora"))}


def _metric_rows(run_dir: Path, summary: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    """PEFT's ``metrics``: a row per evaluation step of metrics.jsonl (``valid <metric>``, the last train loss,
    samples, speed), then the final one from summary.json (``test <metric>``)."""
    try:
        m = load_metrics(run_dir)
    except OSError:
        m = pd.DataFrame()
    metrics = []
    last_loss = None
    if not m.empty and "step" in m:
        for step, g in m.groupby("step", sort=True):
            losses = g["train/loss"].dropna() if "train/loss" in g else pd.Series(dtype=float)
            if len(losses):
                last_loss = float(losses.iloc[-1])
            evals = {c[5:]: g[c].dropna() for c in g.columns if c.startswith("eval/")}
            evals = {k: float(v.iloc[-1]) for k, v in evals.items() if len(v)}
            if not evals:
                continue
            row: dict[str, Any] = {"step": int(step), **{f"valid {k}": v for k, v in evals.items() if k != "loss"}}
            if "loss" in evals:
                row["valid loss"] = evals["loss"]
            row["train loss"] = last_loss
            row["train samples"] = int(step) * batch
            tps = g["perf/tokens_per_s"].dropna() if "perf/tokens_per_s" in g else pd.Series(dtype=float)
            if len(tps):
                row["tokens / sec"] = float(tps.iloc[-1])
            if "valid accuracy" not in row and _accuracy(evals) is not None:
                row["valid accuracy"] = _accuracy(evals)
            metrics.append(row)
    if summary:
        metrics.append(_final_row(summary, last_loss, batch))
    return metrics


def _final_row(summary: dict[str, Any], last_loss: Optional[float], batch: int) -> dict[str, Any]:
    """PEFT's last ``metrics`` entry: ``test <metric>`` (``test accuracy`` also for an exact match,
    :data:`ACCURACY_METRICS`), the loss, samples, ``train total tokens`` and, where the run measured it,
    ``forgetting`` (:data:`FORGETTING_KEY`)."""
    tests = {k[5:]: v for k, v in summary.items() if k.startswith("eval/") and k != "eval/loss"}
    row: dict[str, Any] = {"step": summary.get("steps"), **{f"test {k}": v for k, v in tests.items()}}
    if "accuracy" not in tests and _accuracy(tests) is not None:
        row["test accuracy"] = _accuracy(tests)
    row.update({"test loss": summary.get("eval/loss"), "train loss": last_loss,
                "train samples": int(summary.get("steps") or 0) * batch, "train total tokens": summary.get("tokens")})
    if summary.get(FORGETTING_KEY) is not None:
        row["forgetting"] = summary[FORGETTING_KEY]
    return row


#: summary entries an export keeps (``harness_info.summary``) so that reading it back gives them again
RECORDED_PREFIXES = ("base/", "forget/")
RECORDED_KEYS = ("tokens_per_s", "eval_generated_tokens_per_s", "train_padding_share", "problem")


def _recorded_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The entries of :data:`RECORDED_PREFIXES` / :data:`RECORDED_KEYS` that ``summary`` holds."""
    return {k: v for k, v in summary.items()
            if (k.startswith(RECORDED_PREFIXES) or k in RECORDED_KEYS) and not isinstance(v, (dict, list))}


def _train_config(rec: dict[str, Any]) -> dict[str, Any]:
    """PEFT's ``train_config`` from the run's configuration."""
    cfg, env = rec.get("config", {}), rec.get("environment", {})
    train_cfg = cfg.get("train", {})
    return {
        "model_id": rec.get("model"),
        "dtype": "bfloat16" if train_cfg.get("bf16") and str(env.get("device", "")).startswith("cuda") else "float32",
        "max_seq_length": cfg.get("model", {}).get("max_length"),
        "batch_size": train_cfg.get("batch_size"),
        "batch_size_eval": train_cfg.get("eval_batch_size"),
        "max_steps": rec.get("total_steps", train_cfg.get("max_steps")),
        "eval_steps": train_cfg.get("eval_every"),
        "seed": rec.get("seed"),
        "grad_norm_clip": train_cfg.get("max_grad_norm"),
        "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": train_cfg.get("lr") or cfg.get("method", {}).get("lr"),
                             "weight_decay": train_cfg.get("weight_decay")},
        "lr_scheduler": "linear",
        "task": rec.get("task"),
    }


def _meta_info(rec: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """PEFT's ``meta_info``: the packages and the system the run used (what the harness records)."""
    return {
        "model_info": {"sha": None, "created_at": None},
        "dataset_info": {str(rec.get("task")): {"sha": None, "created_at": None, "source": rec.get("data_source")}},
        "package_info": {
            "transformers-version": env.get("transformers"), "transformers-commit-hash": None,
            "peft-version": env.get("peft"), "peft-commit-hash": None,
            "datasets-version": None, "datasets-commit-hash": None,
            "bitsandbytes-version": None, "bitsandbytes-commit-hash": None,
            "torch-version": env.get("torch"), "torch-commit-hash": None,
        },
        "system_info": {"system": (env.get("platform") or "").split("-")[0] or None,
                        "release": None, "version": None, "machine": None, "processor": None,
                        "accelerator": env.get("gpu") or env.get("device")},
        "pytorch_info": "",
    }


def result_filename(result: dict[str, Any]) -> str:
    """PEFT's file name: the experiment name with ``/`` → ``--``, then ``--<created_at>`` (``:`` → ``-``)."""
    ri = result["run_info"]
    stamp = (ri.get("created_at") or "unknown").replace(":", "-")
    return f"{ri['experiment_name'].replace('/', '--')}--{stamp}.json"


def result_subdir(result: dict[str, Any]) -> str:
    """``results`` for successful runs, ``cancelled_results`` for failed and cancelled ones."""
    return RESULT_DIRS.get(result["train_info"]["status"], "cancelled_results")
