"""Benchmark: ms/step of every method in the harness loop vs a minimal bare PEFT loop, same model and batch.

    python -m benchmarks.bench                                   # MiniLM on CPU, all methods
    python -m benchmarks.bench --model bert-base --device cuda   # GPU presets built from a config
    python -m benchmarks.bench --model llama-1b --device cuda --batch 8 --seq 1024
    python -m benchmarks.bench --plain ...                       # the harness loop with PEFT's own code paths
    python -m benchmarks.bench --profile DIR ...                 # + per-kernel time tables of the harness step

The bare loop is what a user writes with PEFT: its own DoRA/AdaLoRA code, its input casting to the fp32
adapters, frozen weights in bf16 under autocast, fused AdamW, no compile. The harness column runs the
harness's training loop with the chosen options (defaults: the harness's defaults; ``--plain`` turns off
everything the harness adds, so the ratio measures the loop alone). Prints a Markdown table and writes
JSON (``--out``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from harness.config import TORCH_COMPILE_MODES, MethodConfig, ModelConfig, TrainConfig
from harness.families import MATRIX_TYPES, family_for, resolve_targets
from harness.loop import LoopData, make_optimizer, train
from harness.methods import METHODS, get_method
from harness.models import load_model, model_config
from harness.problems import get_problem
from harness.run import speed_up
from harness.run_record import write_report
from harness.speed import COMPILE_CHOICES
from harness.tasks import Encoded
from harness.tracking import NullLogger

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parent.parent / "conf"

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16

#: a Llama-style model of ~1.1B parameters (TinyLlama's shape), built from a config: no download
LLAMA_1B: dict[str, Any] = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22,
                            "intermediate_size": 5632, "num_attention_heads": 32, "num_key_value_heads": 4,
                            "vocab_size": 32000, "max_position_embeddings": 2048, "pad_token_id": 0}
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"name": "minilm"},
    "tiny": {"from_config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "intermediate_size": 64, "vocab_size": 1000}},  # seconds on CPU: the bench's own test
    "bert-base": {"from_config": {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12,
                                  "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522}},
    "llama-1b": {"from_config": LLAMA_1B},
}


def model_spec(name: str) -> ModelConfig:
    """The benchmarks' model names: ``llama-1b``, a folder holding a ``config.json`` (random init),
    ``conf/model/<name>.yaml`` (minilm, tiny_bert, ...), else a transformers name or path."""
    if name == "llama-1b":
        return ModelConfig(name=name, from_config=dict(LLAMA_1B))
    if (Path(name) / "config.json").is_file():
        return ModelConfig(name=name, from_config=json.loads((Path(name) / "config.json").read_text()))
    path = CONF / "model" / f"{name}.yaml"
    if path.is_file():
        options = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(options, dict)
        options.pop("defaults", None)  # the schema it names is ModelConfig itself
        return ModelConfig(**options)  # type: ignore[arg-type]
    return ModelConfig(name=name)


def method_config(name: str, r: int, *, dropout: float, fused: bool,
                  keep_base: Union[bool, list[str]] = False) -> MethodConfig:
    """The method's schema with r (LoRA/DoRA) or target_r = r, init_r = 1.5·r (AdaLoRA, masking every step);
    ``keep_base``: DoRA's ``keep_base_output`` (true, or matrix types)."""
    cls = get_method(name).config_cls
    kw: dict[str, Any] = {"targets": list(MATRIX_TYPES)}
    if name in ("lora", "dora"):
        kw.update(r=r, dropout=dropout)
    if name == "adalora":
        kw.update(target_r=r, init_r=(3 * r + 1) // 2, deltaT=1, tinit=0.0, tfinal=0.0, dropout=dropout)
    if name in ("dora", "adalora"):
        kw["fused"] = fused
    if name == "dora":
        kw["keep_base_output"] = keep_base if fused else False
    return cls(**kw)


def build(model_key: str, method: str, steps: int, device: torch.device, mcfg: MethodConfig,
          tcfg: Optional[TrainConfig], *, bf16: bool = True) -> tuple[nn.Module, Any]:
    """Model wrapped by the method, on the device; ``tcfg`` None: the bare setting (frozen weights in bf16
    on CUDA with ``bf16``, nothing else), else the harness's options of ``tcfg`` (:func:`harness.run.speed_up`)."""
    model_cfg = ModelConfig(**MODELS[model_key])
    conf = model_config(model_cfg, 2, "classification")
    conf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device if model_cfg.from_config is not None else "cpu"):  # random init: on the device
        model = load_model(model_cfg, conf)
    fam = family_for(conf.model_type)
    targets = resolve_targets(model, fam, list(MATRIX_TYPES))
    m = get_method(method)(mcfg, steps)
    model = m.wrap(model, targets, fam.head).to(device)
    if tcfg is not None:
        speed_up(model, tcfg, fam, device, adapters=method != "full")
    elif device.type == "cuda" and bf16:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
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


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step_ms(model: nn.Module, method: Any, batch: dict[str, torch.Tensor], steps: int, warmup: int,
                 device: torch.device, bf16: bool) -> float:
    """A minimal PEFT loop: forward with labels, backward, AdamW step, (AdaLoRA allocation), zero_grad; in
    training mode, as the harness (a pretrained model comes back from ``from_pretrained`` in eval mode)."""
    model.train()
    opt = make_optimizer(model, 1e-4, 0.0, device)
    is_ada = method.name == "adalora"
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        if is_ada:
            model.base_model.update_and_allocate(i + 1)
        opt.zero_grad(set_to_none=True)
    sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


class _Enough(Exception):
    """The last timed window is in: stop before the loop's final evaluation (a compiled model would
    compile its eval graph too)."""


class _Capture(NullLogger):
    """Keeps the rows with a step time; raises :class:`_Enough` at ``last_step``."""

    def __init__(self, last_step: int) -> None:
        self.rows: list[dict[str, float]] = []
        self.last_step = last_step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "perf/s_per_step" in metrics:
            self.rows.append(metrics)
        if step >= self.last_step:
            raise _Enough


def harness_step_ms(model: nn.Module, method: Any, enc: Encoded, *, cfg: TrainConfig, steps: int, warmup: int,
                    device: torch.device) -> float:
    """ms/step of the harness loop (logging every ``warmup`` steps; the first window is warm-up)."""
    cap = _Capture(warmup + steps)
    tiny_dev = Encoded(enc.input_ids[:1], None, enc.labels[:1])
    method.total_steps = warmup + steps
    try:
        train(model, method, LoopData(enc, tiny_dev, 0, get_problem("classification"), ("accuracy",), "accuracy"), cfg,
              total_steps=warmup + steps, lr=1e-4, seed=0, device=device, logger=cap)
    except _Enough:
        pass
    return float(np.mean([r["perf/s_per_step"] for r in cap.rows[1:]])) * 1e3


def profile_harness(model: nn.Module, method: Any, enc: Encoded, *, cfg: TrainConfig, steps: int,
                    device: torch.device, path: Path) -> None:
    """Run ``steps`` more harness steps of an already warm model under ``torch.profiler`` and write to ``path``
    the ops sorted by self device time (CUDA) and by self host time, and the host syncs per step: what a step
    spends its time on, and whether the host or the device limits it (the tables' totals are for all steps)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        harness_step_ms(model, method, enc, cfg=cfg, steps=steps, warmup=cfg.log_every, device=device)
    n = cfg.log_every + steps
    events = prof.key_averages()
    syncs = {e.key: e.count / n for e in events if "Synchronize" in e.key or e.key in ("cudaFree", "cudaMalloc")}
    head = [f"# {path.stem}: {n} steps profiled; host syncs and allocator calls per step: {syncs or 'none'}"]
    tables = [events.table(sort_by="self_cpu_time_total", row_limit=30)]
    if device.type == "cuda":
        tables.insert(0, events.table(sort_by="self_device_time_total", row_limit=40))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + tables) + "\n")


@dataclass
class Row:
    """One benchmark result (memory: peak allocated on CUDA)."""

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
    peak_memory_gib_bare: Optional[float]
    trainable_params: int


def _peak_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _fresh(device: torch.device) -> None:
    """Drop compiled graphs (they hold the last model), collect reference cycles (a PEFT model in one would
    stay allocated and count in the next peak), free cached blocks; reset the peak."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _tag(model_key: str, method: str, tcfg: TrainConfig, keep_base: Union[bool, list[str]]) -> str:
    """``llama-1b-dora[-keep[_Wf2-Wq]][-compile_model]``: a profile's file name."""
    keep = ""
    if keep_base and method == "dora":
        keep = "-keep" if keep_base is True else "-keep_" + "-".join(keep_base)
    comp = f"-compile_{tcfg.compile}" if tcfg.compile != "none" else ""
    return f"{model_key}-{method}{keep}{comp}"


def bench_one(model_key: str, method: str, *, r: int, batch: int, seq: int, steps: int, warmup: int,
              device: torch.device, bf16: bool, dropout: float, tcfg: TrainConfig, fused: bool,
              keep_base: Union[bool, list[str]] = False, profile: Optional[Path] = None) -> Row:
    """Bare loop and harness loop on fresh copies of the same model; same batch shape. ``profile``: a folder
    for :func:`profile_harness`'s table of the harness step (after the timing, which it does not touch)."""
    total = warmup + steps
    model, m = build(model_key, method, total, device, method_config(method, r, dropout=dropout, fused=False), None,
                     bf16=bf16)
    vocab = model.config.vocab_size
    enc = synthetic(batch * (total + 1), seq, vocab)
    b = {"input_ids": torch.tensor(enc.input_ids[:batch], device=device),
         "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
         "labels": torch.tensor(enc.labels[:batch], device=device)}
    _fresh(device)
    ms_bare = bare_step_ms(model, m, b, steps, warmup, device, bf16 and device.type == "cuda")
    peak_bare = _peak_gib(device)
    fpt = flops_per_token(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model, m
    _fresh(device)
    model, m = build(model_key, method, total, device,
                     method_config(method, r, dropout=dropout, fused=fused, keep_base=keep_base), tcfg)
    ms_h = harness_step_ms(model, m, enc, cfg=tcfg, steps=steps, warmup=warmup, device=device)
    peak = _peak_gib(device)
    if profile is not None:
        try:
            profile_harness(model, m, enc, cfg=tcfg, steps=min(steps, 3), device=device,
                            path=profile / f"{_tag(model_key, method, tcfg, keep_base)}.txt")
        except Exception:  # the timing above stands without the table
            log.exception("%s: profiling failed", method)
    tokens = batch * seq
    mfu = fpt * tokens / (ms_h / 1e3) / PEAK_BF16_FLOPS if device.type == "cuda" else None
    del model, m
    _fresh(device)
    return Row(model_key, method, batch, seq, ms_bare, ms_h, ms_bare / ms_h, tokens / (ms_h / 1e3), mfu, peak,
               peak_bare, trainable)


def markdown(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    out = ["| model | method | batch×seq | bare ms/step | harness ms/step | bare/harness | tokens/s | MFU "
           "| peak GiB (bare) | trainable |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "–"
        mem = (f"{r.peak_memory_gib:.1f} ({r.peak_memory_gib_bare:.1f})" if r.peak_memory_gib is not None
               and r.peak_memory_gib_bare is not None else "–")
        out.append(f"| {r.model} | {r.method} | {r.batch}×{r.seq} | {r.ms_bare:.1f} | {r.ms_harness:.1f} | "
                   f"{r.ratio_bare_over_harness:.2f} | {r.tokens_per_s:,.0f} | {mfu} | {mem} | {r.trainable_params:,} |")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", choices=sorted(MODELS))
    ap.add_argument("--methods", default="full,lora,dora,adalora")
    ap.add_argument("--r", type=int, default=16, help="LoRA/DoRA rank; AdaLoRA target_r (init_r = 1.5·r)")
    ap.add_argument("--dropout", type=float, default=0.0, help="adapter dropout (PEFT's default: 0)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-bf16", action="store_true", help="keep float32 weights on GPU")
    ap.add_argument("--plain", action="store_true",
                    help="harness loop with PEFT's own code paths: no fused DoRA/AdaLoRA, PEFT's input casting, no compile")
    ap.add_argument("--keep-base-output", nargs="?", const="true", default="false", metavar="TYPES",
                    help="DoRA: method.keep_base_output; bare: true, or matrix types / module suffixes, e.g. Wf2,Wq,Wo")
    ap.add_argument("--compile", default="none", choices=COMPILE_CHOICES, help="train.compile")
    ap.add_argument("--compile-mode", default=None, choices=TORCH_COMPILE_MODES, help="train.compile_mode")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    ap.add_argument("--profile", type=Path, default=None,
                    help="folder for a per-op time table of each method's harness step (torch.profiler)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    bf16 = device.type == "cuda" and not args.no_bf16
    tcfg = TrainConfig(max_steps=args.warmup + args.steps, batch_size=args.batch, eval_every=10**9,
                       log_every=args.warmup, bf16=bf16, progress=False, max_grad_norm=0.0,
                       cast_adapter_inputs=args.plain, compile="none" if args.plain else args.compile,
                       compile_mode=None if args.plain else args.compile_mode)
    keep_base = {"true": True, "false": False}.get(args.keep_base_output.lower(),
                                                     [k for k in args.keep_base_output.split(",") if k])
    methods = args.methods.split(",")
    for method in methods:
        if method not in METHODS:
            ap.error(f"--methods: unknown method '{method}'; registered: {sorted(METHODS)}")
    rows: list[Row] = []
    failed: dict[str, str] = {}
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else platform.processor() or platform.machine(), "threads": torch.get_num_threads()}

    def report() -> None:  # after every method: a run cut by a time limit keeps what it measured
        write_report(args.out, {"env": env, "args": vars(args) | {"out": str(args.out)},
                                "rows": [asdict(r) for r in rows], "failed": failed})

    for method in methods:
        try:
            rows.append(bench_one(args.model, method, r=args.r, batch=args.batch, seq=args.seq, steps=args.steps,
                                  warmup=args.warmup, device=device, bf16=bf16, dropout=args.dropout, tcfg=tcfg,
                                  fused=not args.plain, keep_base=keep_base, profile=args.profile))
        except Exception as e:  # one method failing (e.g. a compile error) leaves the others measured
            log.exception("%s failed", method)
            failed[method] = f"{type(e).__name__}: {e}"
            _fresh(device)
            report()
            continue
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        report()
    print()
    print(markdown(rows))
    for method, err in failed.items():
        print(f"{method}: failed: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
