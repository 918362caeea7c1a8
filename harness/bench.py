"""Benchmark: ms/step of every method in the harness loop vs a minimal bare PEFT loop, same model and batch.

    python -m harness.bench                                   # MiniLM on CPU, all methods
    python -m harness.bench --model bert-base --device cuda   # GPU presets built from a config
    python -m harness.bench --model llama-1b --device cuda --batch 8 --seq 1024

Prints a Markdown table and writes JSON (``--out``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from harness.config import MethodConfig, ModelConfig, TrainConfig
from harness.families import MATRIX_TYPES, family_for, resolve_targets
from harness.loop import make_optimizer, train
from harness.methods import METHODS, get_method
from harness.models import load_model, model_config
from harness.tasks import Encoded

log = logging.getLogger(__name__)

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16

MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"name": "minilm"},
    "bert-base": {"from_config": {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12,
                                  "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522}},
    "llama-1b": {"from_config": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22,
                                 "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632,
                                 "vocab_size": 32000, "max_position_embeddings": 2048, "pad_token_id": 0}},
}


def method_config(name: str, r: int) -> MethodConfig:
    """The method's schema with r (LoRA/DoRA) or target_r = r, init_r = 1.5·r (AdaLoRA)."""
    cls = get_method(name).config_cls
    kw: dict[str, Any] = {"targets": list(MATRIX_TYPES)}
    if name in ("lora", "dora"):
        kw["r"] = r
    if name == "adalora":
        kw.update(target_r=r, init_r=(3 * r + 1) // 2, deltaT=1, tinit=0.0, tfinal=0.0)
    return cls(**kw)


def build(model_key: str, method: str, r: int, steps: int, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Model wrapped by the method, on the device."""
    mcfg = ModelConfig(**MODELS[model_key])
    conf = model_config(mcfg, 2, "classification")
    conf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = load_model(mcfg, conf)
    fam = family_for(conf.model_type)
    targets = resolve_targets(model, fam, list(MATRIX_TYPES))
    m = get_method(method)(method_config(method, r), steps)
    model = m.wrap(model, targets, fam.head).to(device)
    if dtype != torch.float32:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)
    return model, m


def flops_per_token(model: nn.Module) -> float:
    """6·N for trained weights, 4·N for frozen ones (forward + input-gradient), embeddings excluded."""
    total = 0.0
    for n, p in model.named_parameters():
        if "embed" in n:
            continue
        total += (6 if p.requires_grad else 4) * p.numel()
    return total


def synthetic(n: int, seq: int, vocab: int, seed: int = 0) -> Encoded:
    """n examples of exactly ``seq`` tokens (static shapes), random labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (n, seq)).tolist()
    return Encoded(ids, None, rng.integers(0, 2, n))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step_ms(model: nn.Module, method: Any, batch: dict[str, torch.Tensor], steps: int, warmup: int,
                 device: torch.device, bf16: bool) -> float:
    """A minimal PEFT loop: forward with labels, backward, AdamW step, (AdaLoRA allocation), zero_grad."""
    opt = make_optimizer(model, 1e-4, 0.0, device)
    is_ada = method.name == "adalora"
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        if is_ada:
            model.base_model.update_and_allocate(i + 1)
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


class _Capture:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "perf/s_per_step" in metrics:
            self.rows.append(metrics)

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def harness_step_ms(model: nn.Module, method: Any, enc: Encoded, *, batch: int, steps: int, warmup: int,
                    device: torch.device, bf16: bool) -> float:
    """ms/step of the harness loop (logging every ``steps``; the first window is warm-up)."""
    cap = _Capture()
    cfg = TrainConfig(max_steps=warmup + steps, batch_size=batch, eval_every=10**9, log_every=warmup,
                      bf16=bf16, progress=False, max_grad_norm=0.0)
    tiny_dev = Encoded(enc.input_ids[:1], None, enc.labels[:1])
    method.total_steps = warmup + steps
    train(model, method, train_enc=enc, dev_enc=tiny_dev, cfg=cfg, total_steps=warmup + steps, lr=1e-4, seed=0,
          device=device, pad_id=0, problem="classification", metric_names=("accuracy",), main_metric="accuracy",
          logger=cap)
    timed = [r for r in cap.rows[1:]]
    return float(np.mean([r["perf/s_per_step"] for r in timed])) * 1e3


@dataclass
class Row:
    """One benchmark result."""

    model: str
    method: str
    batch: int
    seq: int
    ms_bare: float
    ms_harness: float
    ratio_bare_over_harness: float
    tokens_per_s: float
    mfu: Optional[float]
    peak_memory_gib: Optional[float]
    trainable_params: int


def bench_one(model_key: str, method: str, *, r: int, batch: int, seq: int, steps: int, warmup: int,
              device: torch.device, bf16: bool) -> Row:
    """Bare loop and harness loop on fresh copies of the same model; same batch shape."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    model, m = build(model_key, method, r, warmup + steps, device, dtype)
    vocab = model.config.vocab_size
    enc = synthetic(batch * (warmup + steps + 1), seq, vocab)
    b = {"input_ids": torch.tensor(enc.input_ids[:batch], device=device),
         "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
         "labels": torch.tensor(enc.labels[:batch], device=device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ms_bare = bare_step_ms(model, m, b, steps, warmup, device, bf16 and device.type == "cuda")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    fpt = flops_per_token(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    model, m = build(model_key, method, r, warmup + steps, device, dtype)
    ms_h = harness_step_ms(model, m, enc, batch=batch, steps=steps, warmup=warmup, device=device,
                           bf16=bf16 and device.type == "cuda")
    tokens = batch * seq
    mfu = fpt * tokens / (ms_h / 1e3) / PEAK_BF16_FLOPS if device.type == "cuda" else None
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(model_key, method, batch, seq, ms_bare, ms_h, ms_bare / ms_h, tokens / (ms_h / 1e3), mfu, peak, trainable)


def markdown(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    out = ["| model | method | batch×seq | bare ms/step | harness ms/step | bare/harness | tokens/s | MFU | peak GiB | trainable |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "–"
        mem = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "–"
        out.append(f"| {r.model} | {r.method} | {r.batch}×{r.seq} | {r.ms_bare:.1f} | {r.ms_harness:.1f} | "
                   f"{r.ratio_bare_over_harness:.2f} | {r.tokens_per_s:,.0f} | {mfu} | {mem} | {r.trainable_params:,} |")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI."""
    ap = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", choices=sorted(MODELS))
    ap.add_argument("--methods", default="full,lora,dora,adalora")
    ap.add_argument("--r", type=int, default=8, help="LoRA/DoRA rank; AdaLoRA target_r (init_r = 1.5·r)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-bf16", action="store_true", help="keep float32 weights on GPU")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    bf16 = device.type == "cuda" and not args.no_bf16
    rows = []
    for method in args.methods.split(","):
        if method not in METHODS:
            ap.error(f"--methods: unknown method '{method}'; registered: {sorted(METHODS)}")
        rows.append(bench_one(args.model, method, r=args.r, batch=args.batch, seq=args.seq, steps=args.steps,
                              warmup=args.warmup, device=device, bf16=bf16))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if args.out:
        args.out.write_text(json.dumps({"env": env, "args": vars(args) | {"out": str(args.out)},
                                        "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
