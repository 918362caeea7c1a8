"""Benchmark: what one weight snapshot costs, against a training step, and over a preset's schedule.

    python -m benchmarks.bench_snapshots                                  # MiniLM on this machine (CPU here)
    python -m benchmarks.bench_snapshots --model llama-1b --dtype bfloat16  # ~1B Llama-style model, on a GPU

For each method it trains a few steps on random tokens (the harness's optimizer, autocast and method hooks),
then takes snapshots exactly as a run does (:class:`harness.snapshots.SnapshotCallback`: summaries on the
device, one host transfer, safetensors + sha256 + index). Reported: ms per training step, ms per snapshot
and its share of one step, bytes per snapshot, the one-off W0 write, and the total cost of the preset's
schedule (W0 + step 0 + ``snapshot.num`` checkpoints + final, over ``--preset-steps``) as a share of
training time. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks.bench import model_spec, sync
from harness.config import ModelConfig, SnapshotConfig
from harness.families import MATRIX_TYPES, family_for, resolve_targets
from harness.methods import get_method
from harness.run_record import write_report
from harness.snapshots import SnapshotCallback, schedule_steps
from harness.tracking import NullLogger

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
def _preset_steps() -> int:
    """train.max_steps of the dora_fig2 preset (the schedule whose cost is reported)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(ROOT / "conf" / "experiment" / "dora_fig2.yaml").train.max_steps)


def _method_config(method: str, r: int) -> Any:
    cls = get_method(method).config_cls
    if method == "full":
        return cls(name=method)
    if method == "adalora":
        return cls(name=method, init_r=r + r // 2, target_r=r, tinit=0.1, tfinal=0.3, deltaT=10)
    return cls(name=method, r=r, alpha=2 * r)


def bench_method(method: str, *, model_cfg: ModelConfig, device: torch.device, dtype: torch.dtype, batch_size: int,
                 seq_len: int, steps: int, warmup: int, repeats: int, r: int, preset_steps: int, num: int,
                 out_dir: Path) -> dict[str, Any]:
    """Train ``warmup + steps`` steps, then ``repeats`` snapshots; times in ms (device synchronised)."""
    from transformers import AutoModelForSequenceClassification

    from harness.loop import make_optimizer
    from harness.models import load_model, meta_model, model_config

    conf = model_config(model_cfg, 2, "classification")
    family = family_for(conf.model_type)
    targets = resolve_targets(meta_model(conf), family, list(MATRIX_TYPES))
    torch.manual_seed(0)
    if model_cfg.from_config is not None:
        with torch.device(device):
            model = AutoModelForSequenceClassification.from_config(conf)
    else:
        model = load_model(model_cfg, conf)
    model = model.to(device=device, dtype=dtype)
    total = max(preset_steps, warmup + steps + 1)
    m = get_method(method)(_method_config(method, r), total)
    model = m.wrap(model, targets, family.head).to(device)
    model.train()
    opt = make_optimizer(model, 1e-5, 0.0, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    use_autocast = device.type == "cuda"  # as the harness (train.bf16=true): bf16 autocast on CUDA
    g = torch.Generator().manual_seed(0)
    vocab = int(conf.vocab_size)

    def step(i: int) -> None:
        batch = {"input_ids": torch.randint(1, vocab, (batch_size, seq_len), generator=g).to(device),
                 "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
                 "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device)}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        m.after_optimizer_step(model, i)
        opt.zero_grad(set_to_none=True)

    for i in range(1, warmup + 1):
        step(i)
    step_ms = []
    for i in range(warmup + 1, warmup + steps + 1):
        sync(device)
        t0 = time.perf_counter()
        step(i)
        sync(device)
        step_ms.append((time.perf_counter() - t0) * 1e3)

    folder = out_dir / f"{method}"
    shutil.rmtree(folder, ignore_errors=True)
    # W0 written by each method's run, as in a run's first use of a store (no reuse from an earlier method,
    # nothing left outside out_dir)
    cfg = SnapshotConfig(schedule="checkpoints", num=num, w0_store="run")
    cb = SnapshotCallback(cfg, targets, folder, total_steps=total, method=m)
    sync(device)
    t0 = time.perf_counter()
    cb.on_train_start(model, NullLogger())  # W0 + the step-0 snapshot (their files: on the writer thread)
    sync(device)
    start_ms = (time.perf_counter() - t0) * 1e3
    cb.wait()
    start_writer_ms = cb.write_seconds * 1e3
    snap_ms, after_ms = [], []
    for k in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        cb.snapshot(10_000_000 + k, NullLogger())
        sync(device)
        snap_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        step(warmup + steps + 1 + k)  # the next step, while the writer thread writes: its interference
        sync(device)
        after_ms.append((time.perf_counter() - t0) * 1e3)
        cb.wait()
    writer_ms = (cb.write_seconds * 1e3 - start_writer_ms) / repeats
    step_med = statistics.median(step_ms)
    snap_med = statistics.median(snap_ms)
    extra_ms = max(0.0, statistics.median(after_ms) - step_med)
    n_sched = len(schedule_steps(cfg, preset_steps))
    schedule_ms = start_ms + n_sched * (snap_med + extra_ms)
    res = {
        "method": method, "matrices": len(cb.tracked), "step_ms": step_med, "snapshot_ms": snap_med,
        "snapshot_ms_all": snap_ms, "snapshot_pct_of_step": 100 * snap_med / step_med,
        "step_after_snapshot_ms": statistics.median(after_ms), "writer_ms_per_snapshot": writer_ms,
        "snapshot_bytes": cb.rows[-1]["bytes"], "w0_bytes": cb.meta["w0"]["bytes"], "w0_and_step0_ms": start_ms,
        "w0_and_step0_writer_ms": start_writer_ms, "preset_steps": preset_steps, "schedule_snapshots": 1 + n_sched,
        "schedule_ms": schedule_ms, "schedule_pct_of_training": 100 * schedule_ms / (preset_steps * step_med),
        "trainable_params": sum(p.numel() for p in trainable),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    cb.close()
    del model, opt, cb
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    shutil.rmtree(folder, ignore_errors=True)
    return res


def markdown(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The results as a Markdown table, with the setting above it."""
    lines = [
        f"Snapshot cost — model {header['model']} ({header['dtype']}) on {header['device_name']}, batch "
        f"{header['batch_size']}×{header['seq_len']} tokens, r={header['r']}; schedule = W0 + step 0 + "
        f"{header['num']} checkpoints + final over {header['preset_steps']} steps",
        "",
        "| method | matrices | ms / step | ms / snapshot (blocking) | % of a step | writer ms / snapshot (background) | "
        "next step ms | MB / snapshot | W0 MB | W0 + step 0 ms (blocking / writer) | schedule ms | % of training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['matrices']} | {r['step_ms']:.1f} | {r['snapshot_ms']:.1f} | "
            f"{r['snapshot_pct_of_step']:.0f}% | {r['writer_ms_per_snapshot']:.1f} | {r['step_after_snapshot_ms']:.1f} | "
            f"{r['snapshot_bytes'] / 1e6:.2f} | {r['w0_bytes'] / 1e6:.0f} | "
            f"{r['w0_and_step0_ms']:.0f} / {r['w0_and_step0_writer_ms']:.0f} | {r['schedule_ms']:.0f} | "
            f"{r['schedule_pct_of_training']:.2f}% |"
        )
    lines += ["", "Blocking: time the training thread waits (summaries on the device, one host copy). Writer: "
              "serialisation, sha256 and file writes on the background thread. Schedule = W0 + step 0 + each "
              "scheduled snapshot (blocking) + any slowdown of the step after it."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_snapshots", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", help="minilm (default), llama-1b, or a conf/model name (tiny_bert)")
    ap.add_argument("--methods", default="lora,dora,adalora,full", help="comma-separated (default: all four)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                    help="model weights; auto: bfloat16 for llama-1b on CUDA, else float32 (the harness's)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per example (SST-2 batches of 32 pad to 31-51, median 40)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed snapshots")
    ap.add_argument("--r", type=int, default=8, help="LoRA/DoRA rank (AdaLoRA: target_r, init_r = 1.5·r)")
    ap.add_argument("--preset-steps", type=int, default=None, help="run length (default: the dora_fig2 preset's)")
    ap.add_argument("--num", type=int, default=3, help="intermediate checkpoints of the schedule (default 3)")
    ap.add_argument("--json", type=Path, default=None,
                    help="JSON output (default outputs/bench/snapshots_<model>_<device>.json)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the snapshots are written (default: a temp dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype) or (
        torch.bfloat16 if args.model == "llama-1b" and device.type == "cuda" else torch.float32)
    preset_steps = args.preset_steps or _preset_steps()
    header = {"model": args.model, "dtype": str(dtype).removeprefix("torch."), "device": str(device),
              "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else platform.processor() or "cpu"),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "r": args.r, "preset_steps": preset_steps, "num": args.num,
              "steps": args.steps, "repeats": args.repeats}
    tmp = None
    out_dir = args.out_dir
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="bench_snapshots_")
        out_dir = Path(tmp)
    results = []
    try:
        for method in args.methods.split(","):
            res = bench_method(method.strip(), model_cfg=model_spec(args.model), device=device, dtype=dtype,
                               batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup,
                               repeats=args.repeats, r=args.r, preset_steps=preset_steps, num=args.num, out_dir=out_dir)
            results.append(res)
            print(f"{method}: step {res['step_ms']:.1f} ms, snapshot {res['snapshot_ms']:.1f} ms "
                  f"({res['snapshot_pct_of_step']:.0f}% of a step), schedule {res['schedule_pct_of_training']:.2f}% "
                  f"of training", file=sys.stderr)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    table = markdown(results, header)
    print(table)
    path = args.json or ROOT / "outputs" / "bench" / f"snapshots_{args.model}_{device.type}.json"
    write_report(path, {"setting": header, "results": results, "markdown": table})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
