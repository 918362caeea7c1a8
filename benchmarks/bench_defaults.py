"""The harness's defaults against its peers, in one invocation: per method, the same model, data, batch, lr and
steps trained by

- ``defaults``: the harness as a user runs it (``python -m harness``; ``train.compile=auto``),
- ``eager``: the harness with ``train.compile=none`` (the default before ``auto``),
- ``bare``: a minimal PEFT loop (get_peft_model, bf16 autocast with frozen weights in bf16, fused AdamW, linear
  schedule, clipping; AdaLoRA's ``update_and_allocate`` after each update),
- ``bare_compile``: the same loop on ``torch.compile(model)`` (PyTorch's defaults: dynamic shapes after a
  recompile),
- ``trainer``: transformers' ``Trainer`` on the PEFT model (bf16, ``adamw_torch_fused``, padding per batch).

Two workloads: ``minilm`` — MiniLM on real SST-2 (GLUE_DIR), batch 32, ``--minilm-steps`` steps, dev accuracy
at the end (every setup scored by the same function); ``llama`` — a ~1.1B Llama-style model built from a config
(random weights), fixed 8×1024 batches, ``--llama-steps`` timed after ``--llama-warmup``.

Reported per setup: ``train_s`` (the training loop's wall seconds, compiling and capturing included, evaluation
left out), ``steps_per_s`` = steps / train_s, the steady ``ms_per_step`` (after warm-up, compile excluded),
``compile_s`` where known, peak memory, and dev accuracy (minilm). JSON (``--out``) and a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from benchmarks.bench import build, method_config, synthetic
from harness.loop import evaluate, linear_schedule, make_optimizer, to_device
from harness.tasks import Encoded, TrainBatches, collate

log = logging.getLogger(__name__)

SETUPS = ("defaults", "eager", "bare", "bare_compile", "trainer")
CONF = Path(__file__).resolve().parent.parent / "conf"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _fresh() -> None:
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


#: rows are appended here as they are measured (a killed invocation keeps what it measured); None: not written
ROWS_FILE: Optional[Path] = None


def _emit(row: dict[str, Any]) -> None:
    log.info("%s", json.dumps(row, default=str))
    if ROWS_FILE is not None:
        with ROWS_FILE.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def _peak_gib() -> Optional[float]:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


# ---------------------------------------------------------------------------------------------------- minilm
def _compose(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def minilm_harness(method: str, steps: int, compile_: str, folder: Path) -> dict[str, Any]:
    """A harness run as the CLI makes it (its defaults but ``train.compile``), no tracking."""
    from harness.run import run

    cfg = _compose([f"method={method}", "task=sst2", "model=minilm", f"train.max_steps={steps}", "tracking=none",
                    "train.progress=false", f"train.compile={compile_}", "train.save_model=false"])
    s = run(cfg, folder)
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    windows = [r["perf/s_per_step"] for r in rows if "perf/s_per_step" in r]
    windows = windows[2:] or windows
    train_s = s["train_seconds"] + s.get("compile_seconds", 0.0)
    return {"train_s": train_s, "steps_per_s": steps / train_s, "ms_per_step": 1e3 * float(np.median(windows)),
            "compile_s": s.get("compile_seconds", 0.0), "accuracy": s["eval/accuracy"],
            "peak_gib": s["peak_memory_bytes"] / 2**30, "path": s.get("speed", {}).get("path", "eager"),
            "speed": s.get("speed"), "lr": s["lr"]}


def _sst2(method: str, steps: int) -> tuple[Any, Encoded, Encoded, Any, float]:
    """The harness's own SST-2 splits, tokenizer, MiniLM config and lr for ``method`` (what its run uses)."""
    from harness.config import effective_lr, to_typed
    from harness.models import load_tokenizer
    from harness.run import plan
    from harness.tasks import encode

    c = to_typed(_compose([f"method={method}", "task=sst2", "model=minilm", f"train.max_steps={steps}"]))
    p = plan(c)
    tok = load_tokenizer(c.model)
    return p, encode(p.data.train, tok, c.model.max_length), encode(p.data.dev, tok, c.model.max_length), tok, \
        effective_lr(c)


def _peft_minilm(p: Any, steps: int, device: torch.device, *, bf16_frozen: bool) -> tuple[nn.Module, Any]:
    """MiniLM wrapped by PEFT's own code (the method's unfused path), on the device."""
    from harness.models import load_model
    from harness.methods import get_method

    c = p.cfg
    kw = {**vars(c.method)}
    if "fused" in kw:
        kw["fused"] = False
    if "keep_base_output" in kw:
        kw["keep_base_output"] = False
    m = get_method(c.method.name)(type(c.method)(**kw), steps)
    model = m.wrap(load_model(c.model, p.model_conf), p.targets, p.family.head).to(device)
    if bf16_frozen and device.type == "cuda" and m.frozen_base:
        for prm in model.parameters():
            if not prm.requires_grad:
                prm.data = prm.data.to(torch.bfloat16)
    return model, m


def bare_loop(model: nn.Module, fwd: Callable[..., Any], method_name: str, train: Encoded, *, steps: int, lr: float,
              pad_id: int, device: torch.device, warmup: int = 20) -> dict[str, float]:
    """A user's PEFT loop on real batches (the harness's batch order, padded to the longest): bf16 autocast,
    fused AdamW, warm-up + linear decay, clipping at 1.0, AdaLoRA's allocation. Times the whole loop and, after
    ``warmup`` steps, the steady part."""
    warmup = min(warmup, steps // 2)
    model.train()
    opt = make_optimizer(model, lr, 0.0, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(steps, math.ceil(0.06 * steps)))
    batches = TrainBatches(len(train), 32, 0)
    trainable = [q for q in model.parameters() if q.requires_grad]
    _sync()
    t0 = time.perf_counter()
    t_warm = t0
    for i in range(1, steps + 1):
        if i == warmup + 1:
            _sync()
            t_warm = time.perf_counter()
        batch = to_device(collate(train, next(batches), pad_id), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = fwd(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        if method_name == "adalora":
            model.base_model.update_and_allocate(i)
        opt.zero_grad(set_to_none=True)
    _sync()
    end = time.perf_counter()
    return {"train_s": end - t0, "steps_per_s": steps / (end - t0),
            "ms_per_step": 1e3 * (end - t_warm) / (steps - warmup)}


def _trainer(model: nn.Module, method: str, rows: list[dict[str, Any]], collator: Any, *, steps: int, warmup: int,
             out: Path, **args: Any) -> tuple[float, float]:
    """transformers' Trainer on ``rows`` for ``steps`` steps (bf16 and fused AdamW on CUDA; ``args``: the rest of
    its TrainingArguments). A callback calls AdaLoRA's allocation after each update, before the gradients are
    zeroed, and times the steps after ``warmup``. Returns (steady ms/step, Trainer's train_runtime in s)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    marks: dict[int, float] = {}

    class Timer(TrainerCallback):
        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if method == "adalora":
                model.base_model.update_and_allocate(state.global_step + 1)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step in (warmup, steps):
                _sync()
                marks[state.global_step] = time.perf_counter()

    cuda = torch.cuda.is_available()
    targs = TrainingArguments(output_dir=str(out), max_steps=steps, bf16=cuda, logging_steps=10**9,
                              save_strategy="no", eval_strategy="no", report_to=[],
                              optim="adamw_torch_fused" if cuda else "adamw_torch", disable_tqdm=True,
                              dataloader_num_workers=0, **args)
    res = Trainer(model=model, args=targs, train_dataset=rows, data_collator=collator, callbacks=[Timer()]).train()
    return 1e3 * (marks[steps] - marks[warmup]) / (steps - warmup), float(res.metrics["train_runtime"])


def trainer_loop(model: nn.Module, method_name: str, train: Encoded, *, steps: int, lr: float, tokenizer: Any,
                 batch: int = 32, warmup: int = 20, out: Path) -> dict[str, float]:
    """:func:`_trainer` with the bare loop's settings on real batches, padded per batch."""
    from transformers import DataCollatorWithPadding

    rows = [{"input_ids": train.input_ids[i], "labels": int(train.labels[i]),
             **({"token_type_ids": train.token_type_ids[i]} if train.token_type_ids is not None else {})}
            for i in range(len(train))]
    ms, train_s = _trainer(model, method_name, rows, DataCollatorWithPadding(tokenizer), steps=steps,
                           warmup=min(warmup, steps // 2), out=out, per_device_train_batch_size=batch,
                           learning_rate=lr, lr_scheduler_type="linear", warmup_steps=math.ceil(0.06 * steps),
                           weight_decay=0.0, max_grad_norm=1.0, seed=0)
    return {"train_s": train_s, "steps_per_s": steps / train_s, "ms_per_step": ms}


def minilm(methods: list[str], setups: list[str], steps: int, device: torch.device, out: Path) -> list[dict]:
    """Every setup of every method on MiniLM / SST-2."""
    rows = []
    for method in methods:
        p, train, dev, tok, lr = _sst2(method, steps)
        for setup in setups:
            _fresh()
            t0 = time.perf_counter()
            try:
                if setup in ("defaults", "eager"):
                    r = minilm_harness(method, steps, "auto" if setup == "defaults" else "none",
                                       out / f"runs/{method}-{setup}")
                else:
                    model, m = _peft_minilm(p, steps, device, bf16_frozen=setup != "trainer")
                    if setup == "trainer":
                        r = trainer_loop(model, method, train, steps=steps, lr=lr, tokenizer=tok,
                                         out=out / f"trainer/{method}")
                    else:
                        fwd = torch.compile(model) if setup == "bare_compile" else model
                        r = bare_loop(model, fwd, method, train, steps=steps, lr=lr, pad_id=tok.pad_token_id,
                                      device=device)
                    acc = evaluate(model, dev, batch_size=128, pad_id=tok.pad_token_id, device=device,
                                   problem="classification", metric_names=("accuracy",),
                                   autocast=lambda: torch.autocast(device.type, dtype=torch.bfloat16,
                                                                   enabled=device.type == "cuda"))
                    r.update(accuracy=acc.metrics["accuracy"], peak_gib=_peak_gib(), lr=lr, path=setup,
                             compile_s=None)
                    del model, m
            except Exception as e:  # one failing setup leaves the others measured
                log.exception("%s %s failed", method, setup)
                r = {"error": f"{type(e).__name__}: {e}"}
            r.update(workload="minilm-sst2", method=method, setup=setup, steps=steps,
                     wall_s=time.perf_counter() - t0)
            _emit(r)
            rows.append(r)
    return rows


# ----------------------------------------------------------------------------------------------------- llama
def llama(methods: list[str], setups: list[str], steps: int, warmup: int, device: torch.device,
          compile_methods: list[str], model_key: str = "llama-1b", seq: int = 1024) -> list[dict]:
    """Every setup of every method on the ~1.1B model, 8×1024 synthetic batches (``bare_compile`` only for
    ``compile_methods``: compiling it costs minutes per method)."""
    from harness.config import TrainConfig
    from benchmarks.bench import bare_step_ms, harness_step_ms

    rows = []
    total = warmup + steps
    for method in methods:
        for setup in setups:
            if setup == "bare_compile" and method not in compile_methods:
                continue
            _fresh()
            t0 = time.perf_counter()
            try:
                harness_setup = setup in ("defaults", "eager")
                tcfg = TrainConfig(compile="auto" if setup == "defaults" else "none", log_every=warmup, batch_size=8,
                                   progress=False,
                                   eval_every=10**9) if harness_setup else None
                model, m = build(model_key, method, total, device,
                                 method_config(method, 16, dropout=0.0, fused=harness_setup), tcfg)
                enc = synthetic(8 * (total + 1), seq, model.config.vocab_size)
                if harness_setup:
                    ms = harness_step_ms(model, m, enc, cfg=tcfg, steps=steps, warmup=warmup, device=device)
                    r = {"ms_per_step": ms}
                elif setup == "trainer":
                    r = _llama_trainer(model, method, enc, steps=total, warmup=warmup)
                else:
                    b = {"input_ids": torch.tensor(enc.input_ids[:8], device=device),
                         "attention_mask": torch.ones(8, seq, dtype=torch.long, device=device),
                         "labels": torch.tensor(enc.labels[:8], device=device)}
                    fwd = torch.compile(model) if setup == "bare_compile" else model
                    _sync()
                    tc = time.perf_counter()
                    ms = bare_step_ms(fwd, m, b, steps, warmup, device, device.type == "cuda")
                    r = {"ms_per_step": ms, "first_steps_s": time.perf_counter() - tc - ms * steps / 1e3}
                r.update(peak_gib=_peak_gib())
                del model, m
            except Exception as e:  # noqa: BLE001 - one failing setup leaves the others measured
                log.exception("llama %s %s failed", method, setup)
                r = {"error": f"{type(e).__name__}: {e}"}
            r.update(workload=f"{model_key}-8x{seq}", method=method, setup=setup, steps=steps,
                     wall_s=time.perf_counter() - t0)
            _emit(r)
            rows.append(r)
    return rows


def _llama_trainer(model: nn.Module, method: str, enc: Encoded, *, steps: int, warmup: int) -> dict[str, float]:
    """:func:`_trainer` on fixed 8×1024 batches (no padding)."""
    from transformers import default_data_collator

    rows = [{"input_ids": enc.input_ids[i], "attention_mask": [1] * len(enc.input_ids[i]), "labels": int(enc.labels[i])}
            for i in range(8 * steps)]
    with tempfile.TemporaryDirectory() as tmp:
        ms, _ = _trainer(model, method, rows, default_data_collator, steps=steps, warmup=warmup, out=Path(tmp),
                         per_device_train_batch_size=8, learning_rate=1e-4)
    return {"ms_per_step": ms}


# ------------------------------------------------------------------------------------------------------ report
def markdown(rows: list[dict]) -> str:
    """One table per workload: a row per method, a column per setup (steady ms/step; minilm adds the loop's
    steps/s with compiling included, and dev accuracy), and defaults' speed-up over each peer."""
    out = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        sub = [r for r in rows if r["workload"] == workload]
        setups = list(dict.fromkeys(r["setup"] for r in sub))
        out += [f"### {workload}", "", "| method | " + " | ".join(setups) + " | defaults vs best peer |",
                "|---|" + "---|" * (len(setups) + 1)]
        for method in dict.fromkeys(r["method"] for r in sub):
            cells, by = [], {r["setup"]: r for r in sub if r["method"] == method}
            for s in setups:
                r = by.get(s)
                if r is None:
                    cells.append("–")
                elif "error" in r:
                    cells.append("failed")
                elif "steps_per_s" in r:
                    cells.append(f"{r['steps_per_s']:.1f} steps/s ({r['ms_per_step']:.1f} ms; acc "
                                 f"{r['accuracy']:.3f})")
                else:
                    cells.append(f"{r['ms_per_step']:.1f} ms")
            key = "steps_per_s" if any("steps_per_s" in r for r in by.values()) else "ms_per_step"
            d = by.get("defaults", {})
            peers = [r[key] for s, r in by.items() if s not in ("defaults",) and key in r]
            if key in d and peers:
                best = max(peers) if key == "steps_per_s" else min(peers)
                ratio = d[key] / best if key == "steps_per_s" else best / d[key]
                cells.append(f"{ratio:.2f}×")
            else:
                cells.append("–")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_defaults", description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="minilm,llama")
    ap.add_argument("--methods", default="full,lora,dora,adalora")
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--minilm-steps", type=int, default=400)
    ap.add_argument("--llama-steps", type=int, default=20)
    ap.add_argument("--llama-warmup", type=int, default=10)
    ap.add_argument("--llama-compile-methods", default="lora", help="methods whose bare_compile row is measured")
    ap.add_argument("--llama-model", default="llama-1b", help="a benchmarks.bench model (tiny: a smoke test)")
    ap.add_argument("--llama-seq", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (a .md beside it)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not os.environ.get("GLUE_DIR") and "minilm" in a.workloads:
        print("error: GLUE_DIR is not set; point it at the GLUE folder (e.g. ../shared/data/glue)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    methods, setups = a.methods.split(","), a.setups.split(",")
    bad = [s for s in setups if s not in SETUPS]
    if bad:
        print(f"error: --setups: unknown {bad}; choose from {','.join(SETUPS)}", file=sys.stderr)
        return 2
    global ROWS_FILE
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        ROWS_FILE = a.out.with_suffix(".rows.jsonl")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "minilm" in a.workloads:
            rows += minilm(methods, setups, a.minilm_steps, device, Path(tmp))
        if "llama" in a.workloads:
            rows += llama(methods, setups, a.llama_steps, a.llama_warmup, device, a.llama_compile_methods.split(","),
                          a.llama_model, a.llama_seq)
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "command": "python -m benchmarks.bench_defaults " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = markdown(rows)
    print(md)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"env": env, "rows": rows}, indent=1, default=str))
        a.out.with_suffix(".md").write_text(f"`{env['command']}` on {env['device']}, torch {env['torch']}\n\n{md}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
