"""One DoRA Linear: PEFT's forward against the harness's fused one (harness/kernels/dora.py).

``python -m benchmarks.bench_dora --d-in 1024 --d-out 1024 --tokens 2048 --r 16 --device cpu --out bench_dora.json``

Times forward + backward (the input requires grad, as inside a network) of PEFT's LoRA with ``use_dora=True``
on one ``nn.Linear``: the median of ``--reps`` after ``--warmup``, the two variants interleaved. On CUDA the
device is synchronised around each call and the peak memory of one call (above what was allocated before
it) is reported; on CPU the figure is this process's CPU time (``--threads``, default 1), which other
processes on a shared machine do not inflate. ``--dropout`` > 0 takes the path where DoRA recomputes W0 x.

``--dtype`` sets W0, the adapters and the input; ``--amp`` is the harness's CUDA training setting instead:
W0 in bf16, fp32 adapters, bf16 input not cast to the adapter dtype, bf16 autocast.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn

from benchmarks.bench import sync
from harness.kernels.dora import install_fused_dora
from harness.run_record import write_report

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class OneLinear(nn.Module):
    """The benchmarked matrix, as the only module PEFT adapts."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


#: the variants timed: PEFT's DoRA, the fused one, the fused one keeping W0 x for the magnitude's gradient
VARIANTS = ("peft", "fused", "fused_keep")


def build(args: argparse.Namespace, device: torch.device, variant: str) -> nn.Module:
    """PEFT DoRA on one (d_in → d_out) Linear, seed 0, B random (PEFT starts it at 0), in training mode, as
    ``variant`` (one of :data:`VARIANTS`)."""
    torch.manual_seed(0)
    cfg = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=args.dropout, target_modules=["lin"],
                     use_dora=True)
    model = get_peft_model(OneLinear(args.d_in, args.d_out), cfg).to(device)
    layer = model.base_model.model.lin
    with torch.no_grad():
        layer.lora_B.default.weight.normal_(std=0.02)
    if args.amp:
        layer.base_layer.weight.data = layer.base_layer.weight.data.bfloat16()
        layer.cast_input_dtype_enabled = False
    else:
        model.to(DTYPES[args.dtype])
    if variant != "peft":
        install_fused_dora(model, keep_base_output=variant == "fused_keep")
    return model.train()


def make_step(model: nn.Module, x: Tensor, gy: Tensor, amp: bool) -> Callable[[], Tensor]:
    """Forward + backward of ``model`` on ``x`` (tokens, d_in) with output gradient ``gy`` (tokens, d_out, x's
    dtype: the layer returns its base result's); returns y."""
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if amp else nullcontext

    def step() -> Tensor:
        x.grad = None
        model.zero_grad(set_to_none=True)
        with ctx():
            y = model(x)
        y.backward(gy)
        return y.detach()

    return step


def timed(step: Callable[[], Tensor], device: torch.device) -> float:
    """Milliseconds of one call: synchronised wall time on CUDA, process CPU time on CPU."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    sync(device)
    t0 = clock()
    step()
    sync(device)
    return 1000 * (clock() - t0)


def peak_mib(step: Callable[[], Tensor], device: torch.device) -> Optional[float]:
    """Peak CUDA memory of one call above what was allocated before it (MiB); None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time the variants on the same input; the fused outputs' largest difference from PEFT's comes with them."""
    g = torch.Generator(device="cpu").manual_seed(1)
    in_dtype = torch.bfloat16 if args.amp else DTYPES[args.dtype]
    x = torch.randn(args.tokens, args.d_in, generator=g).to(device, in_dtype).requires_grad_(True)
    gy = torch.randn(args.tokens, args.d_out, generator=g).to(device, in_dtype)
    steps = {name: make_step(build(args, device, name), x, gy, args.amp) for name in VARIANTS}
    outputs = {}
    for name, step in steps.items():
        torch.manual_seed(2)  # the same dropout mask
        outputs[name] = step().float()
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    ms: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            ms[name].append(timed(step, device))
    rows = {name: {"median_ms": statistics.median(t), "ms": t, "peak_mib": peak_mib(steps[name], device)}
            for name, t in ms.items()}
    for name in VARIANTS[1:]:
        rows[name]["speedup"] = rows["peft"]["median_ms"] / rows[name]["median_ms"]
    diff = max((outputs[name] - outputs["peft"]).abs().max().item() for name in VARIANTS[1:])
    return {"results": rows, "max_abs_diff": diff}


def table(report: dict[str, Any]) -> str:
    """The Markdown table of :func:`run`'s report."""
    lines = ["| variant | median ms (fwd+bwd) | speed-up | peak MiB |", "|---|---:|---:|---:|"]
    for name, r in report["results"].items():
        peak = "–" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(f"| {name} | {r['median_ms']:.3f} | {r.get('speedup', 1.0):.2f}× | {peak} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark, print a Markdown table and write JSON."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_dora", description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=1024)
    ap.add_argument("--d-out", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--amp", action="store_true", help="the harness's CUDA setting (overrides --dtype)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import peft

    report: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"torch": torch.__version__, "peft": peft.__version__, "threads": torch.get_num_threads(),
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        **run(args, device)}
    setting = "amp (bf16 W0, fp32 adapters)" if args.amp else args.dtype
    print(f"DoRA Linear {args.d_in}→{args.d_out}, r={args.r}, {args.tokens} tokens, {setting}, dropout "
          f"{args.dropout}, {report['environment']['gpu'] or device}; max |Δy| = {report['max_abs_diff']:.2e}\n")
    print(table(report))
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
