"""Resume after a kill: checkpoints (format, atomicity), resumed runs equal uninterrupted ones bit for bit on
the CPU, SIGKILL/SIGTERM of a real training process, and the rules for re-running a run folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from harness import checkpoint as ck
from harness.errors import ConfigError
from harness.run import run
from harness.tasks import TrainBatches
from tests.conftest import GLUE, ROOT, TINY, compose_cfg, method_args

# 12 steps, a checkpoint every 4, snapshots every 3, logs every step: checkpoints fall between snapshots,
# evals and log windows, so every piece of state has to come back
RESUME = [*TINY, "train.max_steps=12", "train.checkpoint_every=4", "train.log_every=1", "train.eval_every=5",
          "snapshot=every", "snapshot.every=3"]


def read(p: Path) -> Any:
    return json.loads(p.read_text())


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the timing columns (perf/*), which no two runs share."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    sub = run_dir / "adapter" if (run_dir / "adapter").is_dir() else run_dir / "model"
    out: dict[str, torch.Tensor] = {}
    for f in sorted(sub.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def first_difference(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> str:
    """Where two metric-row lists part: the row index, its steps, keys in one only, differing values."""
    for i, (x, y) in enumerate(zip(ra, rb)):
        if x != y:
            only = sorted(set(x) ^ set(y))[:6]
            vals = {k: (x[k], y[k]) for k in x if k in y and x[k] != y[k]}
            return f"row {i}: steps {x.get('step')} / {y.get('step')}; keys in one only {only}; values {list(vals.items())[:4]}"
    return f"{len(ra)} rows against {len(rb)}"


def assert_same_run(a: Path, b: Path) -> None:
    """Everything a run records is equal (timings and file checksums aside), tensors bit for bit."""
    ra, rb = metric_rows(a), metric_rows(b)
    assert ra == rb, first_difference(ra, rb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = read(a / "summary.json"), read(b / "summary.json")
    assert {k: v for k, v in sa.items() if k.startswith(("eval/", "best/"))} == \
           {k: v for k, v in sb.items() if k.startswith(("eval/", "best/"))}
    assert sa["tokens"] == sb["tokens"] and sa["steps"] == sb["steps"]
    if (a / "snapshots").is_dir():
        # the index without checksums: safetensors writes its metadata map in hash order, so the bytes (not the
        # tensors) of two identical snapshots can differ
        ia = pd.read_parquet(a / "snapshots" / "index.parquet").drop(columns=["checksum"])
        ib = pd.read_parquet(b / "snapshots" / "index.parquet").drop(columns=["checksum"])
        pd.testing.assert_frame_equal(ia, ib)
        for f in sorted((a / "snapshots").glob("step_*.safetensors")):
            ta, tb = load_file(str(f)), load_file(str(b / "snapshots" / f.name))
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f.name
        assert sorted(p.name for p in (a / "snapshots").iterdir()) == sorted(p.name for p in (b / "snapshots").iterdir())
    if (a / "adalora_ranks.jsonl").is_file():
        assert (a / "adalora_ranks.jsonl").read_text() == (b / "adalora_ranks.jsonl").read_text()
        assert read(a / "adapter" / "adapter_config.json")["rank_pattern"] == \
               read(b / "adapter" / "adapter_config.json")["rank_pattern"]


# ---------------------------------------------------------------------------------------------------------
# the checkpoint format


def test_codec_round_trip_without_pickle(tmp_path: Path) -> None:
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    tree = {"opt": opt.state_dict(), "rng": ck.rng_state(), "ints": {1: (2, None), "a": [0.1, float("nan")]},
            "arr": np.arange(5, dtype=np.uint32), "e": torch.zeros(0), "flag": torch.tensor(True)}
    ck.save(tmp_path, 7, tree)
    files = sorted(p.name for p in (tmp_path / ck.DIR / "step_00000007").iterdir())
    assert files == [ck.STATE, ck.TENSORS]  # JSON + safetensors: nothing that can run code when read
    got = ck.latest(tmp_path)
    assert got is not None and got.step == 7
    t = got.tree
    assert t["ints"][1] == (2, None) and t["ints"]["a"][0] == 0.1 and np.isnan(t["ints"]["a"][1])
    assert t["arr"].dtype == np.uint32 and t["arr"].tolist() == [0, 1, 2, 3, 4]
    assert t["rng"]["python"] == tree["rng"]["python"] and torch.equal(t["rng"]["torch"], tree["rng"]["torch"])
    assert t["opt"]["param_groups"] == tree["opt"]["param_groups"]
    for i, st in tree["opt"]["state"].items():
        assert all(torch.equal(st[k], t["opt"]["state"][i][k]) for k in st)
    with pytest.raises(TypeError, match="cannot store"):
        ck.save(tmp_path, 8, {"x": object()})
    assert ck.latest(tmp_path).step == 7  # a failed save leaves the previous checkpoint


def test_only_the_latest_is_kept_and_a_corrupt_one_is_skipped(tmp_path: Path) -> None:
    for step in (2, 4):
        ck.save(tmp_path, step, {"w": torch.full((3,), float(step))})
    assert [p.name for p in (tmp_path / ck.DIR).iterdir()] == ["step_00000004"]
    # a kill between the rename of a newer checkpoint and the removal of the older leaves both: newest wins,
    # and a corrupt newest falls back to the older one
    older = tmp_path / ck.DIR / "step_00000002"
    older.mkdir()
    ck.save(tmp_path / "x", 2, {"w": torch.ones(3)})
    for f in (tmp_path / "x" / ck.DIR / "step_00000002").iterdir():
        (older / f.name).write_bytes(f.read_bytes())
    blob = tmp_path / ck.DIR / "step_00000004" / ck.TENSORS
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    got = ck.latest(tmp_path)
    assert got is not None and got.step == 2 and torch.equal(got.tree["w"], torch.ones(3))


def test_train_batches_seek_continues_the_stream() -> None:
    a = TrainBatches(10, 4, seed=3)
    seen = [next(a) for _ in range(7)]
    b = TrainBatches(10, 4, seed=3)
    c = TrainBatches(10, 4, seed=3)
    for _ in range(4):
        next(c)
    b.seek(c.epoch, c.offset)
    assert all(np.array_equal(next(b), s) for s in seen[4:])


# ---------------------------------------------------------------------------------------------------------
# resumed == uninterrupted (in process: a crash injected at a step)


class Crash(Exception):
    pass


def crash_after(monkeypatch: pytest.MonkeyPatch, n_batches: int) -> None:
    """Make the training data stream raise after ``n_batches`` batches (a crash in the middle of a run)."""
    orig = TrainBatches.__next__
    count = {"n": 0}

    def nxt(self: TrainBatches) -> np.ndarray:
        count["n"] += 1
        if count["n"] > n_batches:
            raise Crash("simulated crash")
        return orig(self)

    monkeypatch.setattr(TrainBatches, "__next__", nxt)


@pytest.mark.parametrize("method", ["lora", "adalora", "full"])
def test_resumed_run_equals_uninterrupted(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = ["method.deltaT=2", "method.tinit=2", "method.tfinal=4"] if method == "adalora" else []
    cfg = compose_cfg([*RESUME, f"method={method}", *extra])
    ref = run(cfg, tmp_path / "ref")
    assert ref["checkpoints"] == 2 and ref["resumed_from"] is None  # after steps 4 and 8 (not at the end)
    assert not (tmp_path / "ref" / ck.DIR).exists()  # a done run keeps no checkpoint

    with monkeypatch.context() as m:
        crash_after(m, 10)  # dies during step 11: last checkpoint after step 8, snapshot at 9 already written
        with pytest.raises(Crash):
            run(cfg, tmp_path / "res")
    rec = read(tmp_path / "res" / "run.json")
    assert rec["status"] == "failed" and "simulated crash" in rec["error"] and rec["checkpoint"]["step"] == 8
    assert max(r["step"] for r in metric_rows(tmp_path / "res")) == 10

    out = run(cfg, tmp_path / "res")
    rec = read(tmp_path / "res" / "run.json")
    assert rec["status"] == "done" and rec["attempt"] == 2 and rec["resumed_from"] == [8]
    assert rec["attempts"][0]["status"] == "failed"
    assert out["resumed_from"] == 8
    steps = [r["step"] for r in metric_rows(tmp_path / "res") if "train/loss" in r]
    assert steps == list(range(1, 13))  # no step logged twice
    assert_same_run(tmp_path / "ref", tmp_path / "res")


def test_adalora_allocator_state_is_in_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_cfg([*RESUME, *method_args("adalora"), "train.save_model=false", "snapshot=none"])
    with monkeypatch.context() as m:
        crash_after(m, 6)
        with pytest.raises(Crash):
            run(cfg, tmp_path)
    tree = ck.latest(tmp_path).tree["method"]
    assert tree["exp_avg_ipt"] and tree["exp_avg_unc"] and tree["ipt"]
    assert set(tree["exp_avg_ipt"]) == set(tree["exp_avg_unc"])
    assert all(v.shape == tree["ipt"][k].shape for k, v in tree["exp_avg_ipt"].items())
    assert tree["records"][0]["phase"] == "init" and tree["calls"] == 4


# ---------------------------------------------------------------------------------------------------------
# a real process killed with SIGKILL (the acceptance test) and stopped with SIGTERM


def cli(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    # the child's torch threads = this process's: CPU reductions depend on the thread count, and the runs
    # compared bit for bit are made here and there
    env = {**os.environ, "GLUE_DIR": str(GLUE), "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def last_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(x)["step"] for x in lines if x.endswith("}")]
    return max(steps, default=0)


SLOW = [*TINY, "train.max_steps=40", "train.checkpoint_every=3", "train.log_every=1", "train.eval_every=10",
        "task.max_train_samples=256", "snapshot=every", "snapshot.every=7"]


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    args = [*SLOW, "method=lora"]
    ref = run(compose_cfg(args), tmp_path / "ref")
    target = random.Random(time.time_ns()).randint(4, 30)
    proc = cli([*args, f"hydra.run.dir={tmp_path / 'res'}"])
    deadline = time.time() + 300
    while last_step(tmp_path / "res") < target and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = last_step(tmp_path / "res")
    assert proc.returncode == -signal.SIGKILL and killed_at < 40, f"the run ended before the kill ({killed_at})"
    rec = read(tmp_path / "res" / "run.json")
    assert rec["status"] == "running"  # a SIGKILL leaves no chance to record anything...
    from harness.record import read_run

    assert read_run(tmp_path / "res")["status"] == "crashed"  # ...but the dead process is noticed
    ckpt_step = rec.get("checkpoint", {}).get("step")
    # the newest complete checkpoint on disk: it can be one newer than run.json says when the kill landed
    # between renaming the checkpoint into place and recording it (the resume takes the newest on disk)
    on_disk = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "res" / "checkpoints").glob("step_*")
                     if p.is_dir()) if (tmp_path / "res" / "checkpoints").is_dir() else []
    if on_disk:
        assert ckpt_step is None or on_disk[-1] >= ckpt_step
        ckpt_step = on_disk[-1]

    again = cli([*args, f"hydra.run.dir={tmp_path / 'res'}"])  # the same command
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    rec = read(tmp_path / "res" / "run.json")
    assert rec["status"] == "done" and rec["attempt"] == 2 and rec["resumed_from"] == [ckpt_step]
    assert ckpt_step is None or ckpt_step >= killed_at - 3
    assert ref["eval/accuracy"] == read(tmp_path / "res" / "summary.json")["eval/accuracy"]
    print(f"killed after step {killed_at}; resumed from checkpoint step {ckpt_step}")  # shown on failure
    assert_same_run(tmp_path / "ref", tmp_path / "res")


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_stops(tmp_path: Path) -> None:
    args = [*SLOW, "method=lora", "train.checkpoint_every=0", f"hydra.run.dir={tmp_path}"]
    proc = cli(args)
    while last_step(tmp_path) < 5 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped" in err and "Traceback" not in err, err[-2000:]
    rec = read(tmp_path / "run.json")
    step = rec["checkpoint"]["step"]
    assert rec["status"] == "failed" and "Stopped" in rec["error"] and step >= 5
    assert last_step(tmp_path) == step  # nothing logged after the checkpoint
    again = cli(args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert read(tmp_path / "run.json")["resumed_from"] == [step]


# ---------------------------------------------------------------------------------------------------------
# what re-running a run folder does


def test_done_is_skipped_force_reruns_other_config_refused(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "method=lora", "snapshot=none"])
    first = run(cfg, tmp_path)
    rec = read(tmp_path / "run.json")
    again = run(cfg, tmp_path)
    assert again["skipped"] and again["eval/accuracy"] == first["eval/accuracy"]
    assert read(tmp_path / "run.json") == rec  # untouched
    forced = run(compose_cfg([*TINY, "method=lora", "snapshot=none", "train.force=true"]), tmp_path)
    assert "skipped" not in forced
    rec2 = read(tmp_path / "run.json")
    assert rec2["attempt"] == 2 and rec2["resumed_from"] == [None] and rec2["config_hash"] == rec["config_hash"]
    assert [r["step"] for r in metric_rows(tmp_path) if "train/loss" in r] == [2, 4, 6]
    with pytest.raises(ConfigError, match="another configuration.*train.force=true"):
        run(compose_cfg([*TINY, "method=dora", "snapshot=none"]), tmp_path)


def test_resume_never_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*RESUME, "method=lora", "snapshot=none"]
    with monkeypatch.context() as m:
        crash_after(m, 9)
        with pytest.raises(Crash):
            run(compose_cfg(args), tmp_path)
    assert ck.exists(tmp_path)
    run(compose_cfg([*args, "train.resume=never"]), tmp_path)
    rec = read(tmp_path / "run.json")
    assert rec["resumed_from"] == [None] and rec["status"] == "done"
    assert [r["step"] for r in metric_rows(tmp_path) if "train/loss" in r] == list(range(1, 13))


def test_a_live_run_is_not_started_twice(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "method=lora", "snapshot=none"])
    run(cfg, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rec = read(tmp_path / "run.json")
        from harness.record import proc_start

        rec.update(status="running", pid=sleeper.pid, proc_start=proc_start(sleeper.pid))
        (tmp_path / "run.json").write_text(json.dumps(rec))
        with pytest.raises(ConfigError, match=f"process {sleeper.pid} on this host is running this run"):
            run(cfg, tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    run(cfg, tmp_path)  # the process is gone: the crashed run is taken over (no checkpoint: from scratch)
    assert read(tmp_path / "run.json")["status"] == "done"


def test_timed_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_cfg([*TINY, "method=lora", "snapshot=none", "train.checkpoint_minutes=1e-9"])
    with monkeypatch.context() as m:
        crash_after(m, 4)
        with pytest.raises(Crash):
            run(cfg, tmp_path)
    assert ck.latest(tmp_path).step == 4  # one after every step, the latest kept
    assert run(cfg, tmp_path)["resumed_from"] == 4


def test_divergence_stops_at_the_step_and_is_never_checkpointed(tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "method=lora", "method.lr=1e30", "train.max_grad_norm=0", "train.checkpoint_every=1",
                       "train.log_every=100"])
    with pytest.raises(Exception, match="diverged"):
        run(cfg, tmp_path)
    rec = read(tmp_path / "run.json")
    assert rec["status"] == "failed" and "not finite at step 2" in rec["error"]
    got = ck.latest(tmp_path)
    assert got is not None and got.step == 1  # the last finite state, not the diverged one


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@pytest.mark.slow
def test_torchrun_killed_and_resumed(tmp_path: Path) -> None:
    """Two processes (gloo on CPU), dropout off: the resumed run equals the uninterrupted one."""
    from tests.harness.test_distributed import ARGS

    args = [*ARGS, "method=lora", "train.max_steps=80", "train.checkpoint_every=4", "train.log_every=1",
            "snapshot=none"]
    env = {**os.environ, "GLUE_DIR": str(GLUE), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "harness", *args]

    def launch(run_dir: Path, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
        return subprocess.Popen([*torchrun, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=stderr)

    ref = launch(tmp_path / "ref")
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    proc = launch(tmp_path / "res", stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while last_step(tmp_path / "res") < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    for pid in [proc.pid, *descendants(proc.pid)]:  # the launcher and both workers (in sessions of their own)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    assert last_step(tmp_path / "res") < 80, "the run ended before the kill"
    again = launch(tmp_path / "res")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    rec = read(tmp_path / "res" / "run.json")
    assert rec["status"] == "done" and rec["world_size"] == 2 and rec["resumed_from"][0] >= 8
    assert metric_rows(tmp_path / "ref") == metric_rows(tmp_path / "res")
    wa, wb = weights(tmp_path / "ref"), weights(tmp_path / "res")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
