"""AdaLoRA's per-step overhead over LoRA at the same initial rank, and where it goes.

``python -m benchmarks.bench_adalora --model minilm --device cuda --out bench_adalora.json``

``--model``: a conf/model name, ``llama-1b`` (a ~1.1B Llama shape, random init) or a folder holding a
``config.json`` (that architecture, random init: timings do not depend on the weights). AdaLoRA runs the
harness's fused allocator and orthogonality term (``--fused``, the harness's default) or PEFT's own
(``--no-fused``).

Both methods go through the harness (``Method.wrap``, ``after_optimizer_step``, ``log_metrics``) on one
synthetic batch stream; a step is forward (PEFT adds the orthogonality term there), backward, clipping,
AdamW, the method's step hook, ``zero_grad`` — the loop's order, with bf16 autocast on CUDA as the loop does.

Timed without inner synchronisation (device synced only around each timed window; best of ``--repeats``
windows, the variants interleaved; on CPU the figure is this process's CPU time — run with ``--threads 1`` —
so that other processes on a shared machine do not inflate it):

* ``lora``                    LoRA, r = init_r
* ``adalora_no_alloc_no_orth`` AdaLoRA's SVD-form adapters only: loss computed outside the model (so PEFT
                              adds no orthogonality term) and no ``update_and_allocate``
* ``adalora_no_alloc``         + the orthogonality term
* ``adalora_warmup``           phase t ≤ t_i: ``update_and_allocate`` updates the importance scores only
* ``adalora_budget_dT<d>``     budget phase, masking every d steps (scores + mask + this harness's recording)
* ``adalora_final``            phase t > T − t_f: PEFT re-applies the final mask at every step

Then one synchronised pass per AdaLoRA phase splits the step into forward, backward, optimizer and the
allocator's functions (``alloc.update_ipt``, ``alloc.mask_to_budget``, ``alloc.mask_using_rank_pattern``: PEFT's
or the fused ones) plus this harness's recording (``kept_ranks``; ``method_step`` contains these,
``log_metrics`` is the flush at log steps). ``whole_run`` weighs the phases like a run with
``--tinit/--tfinal`` fractions and ΔT, which is what the paper's "+11% per epoch" compares.

``parts`` (skip with ``--no-parts``, alone with ``--parts-only``) times PEFT's and the fused implementation
side by side on one model with fixed gradients: ``update_and_allocate`` alone in each phase (budget phase
masking every step) and the orthogonality term's forward + backward alone; ms per call (best window) and, on
CUDA, host syncs per call.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from peft.tuners.adalora.layer import RankAllocator
from peft.tuners.adalora.model import AdaLoraModel

from benchmarks.bench import model_spec, sync
from harness.families import family_for, resolve_targets
from harness.methods.adalora import AdaLora, AdaLoraMethodConfig
from harness.methods.base import Method
from harness.kernels.adalora import FusedAdaLoraModel, FusedRankAllocator, install_fused_adalora
from harness.methods.lora import Lora, LoraMethodConfig
from harness.models import load_model, meta_model, model_config
from harness.run_record import write_report

log = logging.getLogger(__name__)
BIG_T = 1_000_000  # run length for phase measurements: every measured step stays in one phase


def autocast_for(device: torch.device) -> Callable[[], Any]:
    """bf16 autocast on CUDA, as the loop does; nothing on CPU."""
    return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext


def build(method: Method, model_name: str, device: torch.device) -> torch.nn.Module:
    """The model of :func:`model_spec` wrapped by ``method`` on ``device`` (seed 0)."""
    mcfg = model_spec(model_name)
    conf = model_config(mcfg, 2, "classification")
    fam = family_for(conf.model_type)
    targets = resolve_targets(meta_model(conf), fam, list(method.cfg.targets), None)
    torch.manual_seed(0)
    # a random init is built on the device (seconds for llama-1b), pretrained weights are loaded on the CPU
    with torch.device(device if mcfg.from_config is not None else "cpu"):
        base = load_model(mcfg, conf)
    model = method.wrap(base, targets, fam.head).to(device)
    if isinstance(method, AdaLora):
        method.run_dir = None
    return model.train()


def make_batches(n: int, *, batch_size: int, seq_len: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """``n`` random batches already on the device (no data loading in the timing)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        out.append({"input_ids": torch.randint(1000, 20000, (batch_size, seq_len), generator=g).to(device),
                    "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long).to(device),
                    "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device)})
    return out


class Stepper:
    """One training step in the harness loop's order; ``timer`` (optional) wraps each part."""

    def __init__(self, model: torch.nn.Module, method: Method, device: torch.device, *, lr: float = 1e-3,
                 orth: bool = True, alloc: bool = True, log_every: int = 20) -> None:
        self.model, self.method, self.device = model, method, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, fused=device.type == "cuda")
        self.orth, self.alloc, self.log_every = orth, alloc, log_every
        self.autocast = autocast_for(device)

    def step(self, batch: dict[str, torch.Tensor], step: int, timer: Optional["Timer"] = None) -> None:
        t = timer or Timer.null()
        with t("forward"), self.autocast():
            if self.orth:
                out = self.model(**batch)
                loss = out.loss
            else:  # loss outside the model: PEFT adds no orthogonality term
                out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                loss = F.cross_entropy(out.logits.float(), batch["labels"])
        with t("backward"):
            loss.backward()
        with t("optimizer"):
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
        if self.alloc:
            with t("method_step"):
                self.method.after_optimizer_step(self.model, step)
        self.opt.zero_grad(set_to_none=True)
        if step % self.log_every == 0:
            with t("log_metrics"):
                self.method.log_metrics(self.model)


class Timer:
    """Accumulates synchronised wall time per named section (ms)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.clock = time.process_time if device.type == "cpu" else time.perf_counter
        self.ms: dict[str, float] = defaultdict(float)
        self.active = True

    @classmethod
    def null(cls) -> "Timer":
        t = cls(torch.device("cpu"))
        t.active = False
        return t

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        sync(self.device)
        t0 = self.clock()
        yield
        sync(self.device)
        self.ms[name] += 1000 * (self.clock() - t0)

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        """Time every call of ``obj.attr`` under ``name`` (instance attribute shadows the method)."""
        fn = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            with self(name):
                return fn(*a, **k)

        setattr(obj, attr, timed)


def phase_schedule(phase: str, prologue: int) -> tuple[int, int]:
    """(tinit, tfinal) of a run of BIG_T steps whose steps after ``prologue`` all fall in ``phase``."""
    if phase == "warmup":
        return BIG_T // 2, 10
    if phase == "budget":
        return 0, 10
    return 1, BIG_T - prologue  # final: T − t_f = prologue, the forced final mask happens in the prologue


def adalora_method(args: argparse.Namespace, phase: str, deltaT: int, *, fused: Optional[bool] = None) -> AdaLora:
    """An AdaLoRA method whose measured steps (after ``prologue`` steps) all fall in ``phase``."""
    tinit, tfinal = phase_schedule(phase, args.prologue)
    cfg = AdaLoraMethodConfig(init_r=args.init_r, target_r=args.target_r, tinit=tinit, tfinal=tfinal,
                              deltaT=1 if phase == "final" else deltaT, orth_reg_weight=0.1,
                              fused=args.fused if fused is None else fused)
    m = AdaLora(cfg, BIG_T)
    m.validate_config(cfg)
    m.validate_run()
    return m


@dataclass
class Variant:
    """One timed configuration: its stepper and its own step counter (phases depend on the step)."""

    name: str
    method: Method
    stepper: Stepper
    step: int = 0
    windows: list[float] = field(default_factory=list)  # wall ms/step
    cpu_windows: list[float] = field(default_factory=list)  # this process's CPU ms/step

    def run(self, batches: list[dict[str, torch.Tensor]], n: int, timer: Optional[Timer] = None) -> None:
        for _ in range(n):
            self.step += 1
            self.stepper.step(batches[self.step % len(batches)], self.step, timer)


def make_variant(args: argparse.Namespace, name: str, method: Method, device: torch.device, *, orth: bool = True,
                 alloc: bool = True) -> Variant:
    return Variant(name, method, Stepper(build(method, args.model, device), method, device, orth=orth, alloc=alloc))


def time_variants(args: argparse.Namespace, variants: list[Variant], device: torch.device,
                  batches: list[dict[str, torch.Tensor]], *, breakdown: bool) -> dict[str, dict[str, Any]]:
    """Prologue, then ``args.repeats`` rounds in which every variant runs one window of ``args.steps`` steps
    (interleaved, so that drifting load on a shared machine hits all variants alike); best and median window
    per variant; then one synchronised breakdown window per variant."""
    for v in variants:
        v.run(batches, args.prologue)
    for _ in range(args.repeats):
        for v in variants:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            v.run(batches, args.steps)
            sync(device)
            v.windows.append(1000 * (time.perf_counter() - t0) / args.steps)
            v.cpu_windows.append(1000 * (time.process_time() - c0) / args.steps)
    results: dict[str, dict[str, Any]] = {}
    for v in variants:
        # the best window: on a shared machine the others also measure the neighbours. On CPU the process's
        # own CPU time (one thread) is the figure: other processes on the machine do not inflate it
        best = min(v.cpu_windows) if device.type == "cpu" else min(v.windows)
        res: dict[str, Any] = {"variant": v.name, "ms_per_step": best, "wall_ms_per_step": min(v.windows),
                               "median_wall_ms_per_step": statistics.median(v.windows), "windows_ms": v.windows,
                               "cpu_windows_ms": v.cpu_windows}
        if breakdown and v.stepper.alloc:
            timer = Timer(device)
            if isinstance(v.method, AdaLora):
                alloc_obj = v.stepper.model.base_model.rankallocator
                for attr in ("update_ipt", "mask_to_budget", "mask_using_rank_pattern"):
                    timer.wrap(alloc_obj, attr, f"alloc.{attr}")
                timer.wrap(v.method, "kept_ranks", "harness.kept_ranks")
            sync(device)
            t0 = timer.clock()
            v.run(batches, args.steps, timer)
            res["breakdown_ms_per_step"] = {k: ms / args.steps for k, ms in sorted(timer.ms.items())}
            res["breakdown_total_ms_per_step"] = 1000 * (timer.clock() - t0) / args.steps
        results[v.name] = res
    return results


def best_ms_per_call(fn: Callable[[], Any], *, n: int, repeats: int, device: torch.device) -> float:
    """Best of ``repeats`` windows of ``n`` calls, ms per call (device synced around each window; on CPU this
    process's CPU time)."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = clock()
        for _ in range(n):
            fn()
        sync(device)
        best = min(best, 1000 * (clock() - t0) / n)
    return best


def host_syncs(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Synchronising CUDA operations in one call of ``fn`` after a first, untimed one (one-time work such as
    the final phase's mask upload excluded); None off CUDA."""
    if device.type != "cuda":
        return None
    fn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("called a synchronizing CUDA operation" in str(w.message) for w in caught)


@contextmanager
def zero_task_loss(base: AdaLoraModel, device: torch.device) -> Iterator[None]:
    """The wrapped model's forward returns only a zero loss: AdaLoraModel.forward then adds just γ·R(P, Q)."""
    base.model.forward = lambda *a, **k: SimpleNamespace(loss=torch.zeros((), device=device))
    try:
        yield
    finally:
        del base.model.forward


def bench_parts(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    """PEFT's vs the fused ``update_and_allocate`` per phase and orthogonality term, on one model whose adapter
    gradients come from one backward and stay fixed; see the module doc."""
    method = adalora_method(args, "budget", 1, fused=False)
    model = build(method, args.model, device)
    batch = make_batches(1, batch_size=args.batch_size, seq_len=args.seq_len, device=device)[0]
    autocast = autocast_for(device)
    with autocast():
        loss = model(**batch).loss
    loss.backward()
    install_fused_adalora(model)  # FusedAdaLoraModel.forward needs its groups; allocators are set per phase below
    base = model.base_model
    cfg = base.peft_config[base.trainable_adapter_name]
    impls = {"peft": (RankAllocator, AdaLoraModel.forward), "fused": (FusedRankAllocator, FusedAdaLoraModel.forward)}

    def timed(fn: Callable[[], Any]) -> dict[str, Any]:
        syncs = host_syncs(fn, device)
        return {"ms": best_ms_per_call(fn, n=args.steps, repeats=args.repeats, device=device), "syncs": syncs}

    def allocate(cls: type[RankAllocator], phase: str) -> dict[str, Any]:
        cfg.tinit, cfg.tfinal = phase_schedule(phase, args.prologue)
        cfg.total_step, cfg.deltaT, cfg.rank_pattern = BIG_T, 1, None
        base.rankallocator = cls(base.model, cfg, base.trainable_adapter_name)
        steps = count(1)
        for _ in range(args.prologue):
            base.update_and_allocate(next(steps))
        return timed(lambda: base.update_and_allocate(next(steps)))

    def orth(forward: Callable[..., Any]) -> dict[str, Any]:
        def call() -> None:
            with zero_task_loss(base, device), autocast():
                term = forward(base).loss
            term.backward()
        return timed(call)

    out: dict[str, dict[str, Any]] = {}
    for part in ("update_and_allocate/warmup", "update_and_allocate/budget", "update_and_allocate/final",
                 "orth_reg/forward_backward"):
        row: dict[str, Any] = {"part": part}
        for impl, (cls, forward) in impls.items():
            res = allocate(cls, part.split("/")[1]) if part.startswith("update") else orth(forward)
            row[f"{impl}_ms"], row[f"{impl}_syncs"] = res["ms"], res["syncs"]
        row["speedup"] = row["peft_ms"] / row["fused_ms"]
        out[part] = row
    return out


def whole_run(results: dict[str, dict[str, Any]], *, tinit: float, tfinal: float, deltaT: int) -> Optional[float]:
    """AdaLoRA time / LoRA time over a run with these phase fractions (the paper's per-epoch comparison)."""
    key = f"adalora_budget_dT{deltaT}"
    if key not in results:
        return None
    budget = 1 - tinit - tfinal
    ada = (tinit * results["adalora_warmup"]["ms_per_step"] + budget * results[key]["ms_per_step"]
           + tfinal * results["adalora_final"]["ms_per_step"])
    return ada / results["lora"]["ms_per_step"]


def time_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The whole-step variants (LoRA and AdaLoRA per phase): results and the whole-run ratios."""
    deltas = [int(x) for x in args.deltaT.split(",") if x]
    batches = make_batches(8, batch_size=args.batch_size, seq_len=args.seq_len, device=device)
    variants = [
        make_variant(args, "lora", Lora(LoraMethodConfig(r=args.init_r), BIG_T), device),
        make_variant(args, "adalora_no_alloc_no_orth", adalora_method(args, "budget", 10), device, orth=False,
                     alloc=False),
        make_variant(args, "adalora_no_alloc", adalora_method(args, "budget", 10), device, alloc=False),
        make_variant(args, "adalora_warmup", adalora_method(args, "warmup", 10), device),
        *[make_variant(args, f"adalora_budget_dT{d}", adalora_method(args, "budget", d), device) for d in deltas],
        make_variant(args, "adalora_final", adalora_method(args, "final", 1), device),
    ]
    results = time_variants(args, variants, device, batches, breakdown=not args.no_breakdown)
    base = results["lora"]["ms_per_step"]
    for r in results.values():
        r["overhead_vs_lora"] = r["ms_per_step"] / base - 1
    est = {f"dT{d}": whole_run(results, tinit=args.tinit, tfinal=args.tfinal, deltaT=d) for d in deltas}
    return {"results": results, "whole_run_ratio": est}


def print_steps(args: argparse.Namespace, report: dict[str, Any]) -> None:
    print(f"{'variant':<28}{'ms/step':>10}{'vs LoRA':>10}")
    for r in report["results"].values():
        print(f"{r['variant']:<28}{r['ms_per_step']:>10.2f}{100 * r['overhead_vs_lora']:>+9.1f}%")
    for k, v in report["whole_run_ratio"].items():
        if v is not None:
            print(f"whole run (t_i={args.tinit}, t_f={args.tfinal}, ΔT={k[2:]}): AdaLoRA/LoRA = {v:.3f} "
                  f"({100 * (v - 1):+.1f}%)")
    if not args.no_breakdown:
        print("\nsynchronised breakdown, ms/step:")
        for r in report["results"].values():
            if "breakdown_ms_per_step" in r:
                parts = " ".join(f"{k}={v:.2f}" for k, v in r["breakdown_ms_per_step"].items())
                print(f"  {r['variant']:<24} total={r['breakdown_total_ms_per_step']:.2f} {parts}")


def print_parts(parts: dict[str, dict[str, Any]]) -> None:
    print("\nPEFT vs fused, alone (ms per call; host syncs per call on CUDA):")
    print(f"{'part':<32}{'PEFT':>10}{'fused':>10}{'speed-up':>10}{'syncs':>10}")
    for r in parts.values():
        syncs = "" if r["peft_syncs"] is None else f"{r['peft_syncs']}/{r['fused_syncs']}"
        print(f"{r['part']:<32}{r['peft_ms']:>10.3f}{r['fused_ms']:>10.3f}{r['speedup']:>9.1f}×{syncs:>10}")


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark, print a table and write JSON."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_adalora", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_bert",
                    help="a conf/model/*.yaml name (tiny_bert, minilm, ...), llama-1b, or a folder with a config.json")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--init-r", type=int, default=12)
    ap.add_argument("--target-r", type=int, default=8)
    ap.add_argument("--deltaT", default="1,10,100", help="masking intervals of the budget phase to time")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100, help="steps (parts: calls) per timed window")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows per variant (the best is reported)")
    ap.add_argument("--prologue", type=int, default=10, help="untimed steps before timing (warm-up, >= 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--tinit", type=float, default=0.1, help="run fractions for the whole-run estimate")
    ap.add_argument("--tfinal", type=float, default=0.3)
    ap.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True,
                    help="AdaLoRA step variants with the harness's fused allocator (default) or PEFT's own")
    ap.add_argument("--no-breakdown", action="store_true")
    parts_arg = ap.add_mutually_exclusive_group()
    parts_arg.add_argument("--no-parts", action="store_true", help="skip the PEFT-vs-fused parts")
    parts_arg.add_argument("--parts-only", action="store_true", help="only the PEFT-vs-fused parts")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    if args.prologue < 2 or args.steps < 1 or args.repeats < 1:
        ap.error("--prologue must be >= 2 (the final-phase variant masks inside it), --steps and --repeats >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    import peft

    env = {"torch": torch.__version__, "peft": peft.__version__, "device": str(device),
           "threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    report: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "environment": env}
    print(f"\nAdaLoRA ({'fused' if args.fused else 'PEFT'}) vs LoRA (r = init_r = {args.init_r}) · {args.model} · "
          f"{device} {env['gpu'] or ''} · batch {args.batch_size}×{args.seq_len}")
    if not args.parts_only:
        report.update(time_steps(args, device))
        print_steps(args, report)
    if not args.no_parts:
        report["parts"] = bench_parts(args, device)
        print_parts(report["parts"])
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
