"""Snapshots: schedule, what is stored (bytes against the formula), online summaries, wiring into a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from harness.config import SnapshotConfig, to_typed, validate
from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.models import load_model
from harness.run import plan, run
from harness.methods import METHODS
from harness.methods.base import Method
from harness.snapshot_format import DENSE_SUMMARY, STATS, get_form, rebuild, spectral_norm, summarize
from harness.snapshots import SnapshotCallback, find_tracked, schedule_steps, select, step_file
from tests.conftest import TINY, compose_cfg, method_args

#: every registered method with a frozen base (a new method is tested here at once)
ADAPTERS = tuple(sorted(m for m, cls in METHODS.items() if cls.frozen_base))


class ListLogger:
    """A MetricLogger keeping what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def tiny_model(method: str, *overrides: str) -> tuple[nn.Module, list[MatrixRef], Method]:
    """A tiny random model wrapped by ``method`` exactly as the harness does, its adapted matrices, the method."""
    p = plan(compose_cfg([*TINY, *method_args(method), *overrides]))
    torch.manual_seed(0)
    return p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head), p.targets, p.method


@torch.no_grad()
def perturb(model: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every trainable matrix parameter (and full FT's weights) as training would, but far."""
    g = torch.Generator().manual_seed(seed)
    for n, p in model.named_parameters():
        if p.requires_grad and ("lora_" in n or "vera_lambda" in n or (p.ndim == 2 and "embeddings" not in n)):
            p.add_(torch.randn(p.shape, generator=g) * scale * (1 + p.abs().mean()))


def snapshot_run(out: Path, method: str, *, steps: tuple[int, ...] = (3, 6), cfg: SnapshotConfig | None = None,
                 overrides: tuple[str, ...] = ()) -> tuple[nn.Module, SnapshotCallback, ListLogger]:
    """Drive a SnapshotCallback through a fake training: perturb, snapshot at ``steps`` (last = final)."""
    model, targets, m = tiny_model(method, *overrides)
    cfg = cfg or SnapshotConfig(schedule="steps", steps=list(steps))
    cb = SnapshotCallback(cfg, targets, out, total_steps=steps[-1], method=m)
    logger = ListLogger()
    cb.on_train_start(model, logger)
    for i, s in enumerate(steps):
        perturb(model, seed=i)
        if s == steps[-1]:
            cb.on_train_end(model, s, logger)
        else:
            cb.on_step(model, s, logger)
    return model, cb, logger


def test_equal_weights_give_equal_files_and_checksums(tmp_path: Path) -> None:
    """Two snapshot runs of the same weights write byte-identical files (deterministic headers)."""
    for d in ("a", "b"):
        snapshot_run(tmp_path / d, "lora")
    files = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert len(files) >= 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    index = [pd.read_parquet(tmp_path / d / "index.parquet") for d in ("a", "b")]
    assert index[0]["checksum"].tolist() == index[1]["checksum"].tolist()


# -- schedule ------------------------------------------------------------------------------------------------

def test_schedules_always_end_with_the_final_step() -> None:
    assert schedule_steps(SnapshotConfig(schedule="checkpoints", num=3), 2000) == [500, 1000, 1500, 2000]
    assert schedule_steps(SnapshotConfig(schedule="checkpoints", num=3), 6) == [2, 3, 4, 6]
    assert schedule_steps(SnapshotConfig(schedule="every", every=40), 100) == [40, 80, 100]
    assert schedule_steps(SnapshotConfig(schedule="steps", steps=[7, 3, 500]), 100) == [3, 7, 100]
    log_steps = schedule_steps(SnapshotConfig(schedule="log", num=5), 10_000)
    assert log_steps == [1, 10, 100, 1000, 10_000]


@pytest.mark.parametrize("override, key", [
    ("snapshot.schedule=often", "snapshot.schedule"),
    ("snapshot.num=0", "snapshot.num"),
    ("snapshot.steps=[0,5]", "snapshot.steps"),
    ("snapshot.types=[Wk]", "snapshot.types"),
])
def test_bad_snapshot_config_names_the_key(override: str, key: str) -> None:
    cfg = to_typed(compose_cfg([*TINY, "method=lora", "method.targets=[Wq,Wv]", override]))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


# -- storage -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ADAPTERS)
def test_bytes_per_step_are_r_times_d_plus_k(method: str, tmp_path: Path) -> None:
    """Per step and matrix: r·(d+k) numbers (+ d for DoRA's m, + r for AdaLoRA's E, + r·(d+k) for PiSSA's initial
    factors, + d + r for VeRA's scaling vectors), never d·k."""
    _, cb, _ = snapshot_run(tmp_path, method)
    index = pd.read_parquet(tmp_path / "index.parquet")
    meta = json.loads((tmp_path / "meta.json").read_text())
    for m in meta["matrices"]:
        (out, inp), r = m["shape"], m["rank"]
        numbers = r * (out + inp) + {"lora": 0, "dora": out, "adalora": r, "pissa": r * (out + inp),
                                     "vera": out + r}[method]
        rows = index[index["matrix"] == m["name"]]
        assert (rows["tensor_bytes"] == 4 * numbers).all(), m["name"]
    for step, rows in index.groupby("step"):
        f = tmp_path / step_file(int(step))
        factors = get_form(meta["matrices"][0]["form"]).tensors
        n_tensors = len(rows) * len(factors)
        header = f.stat().st_size - rows["tensor_bytes"].sum()
        assert 0 < header < 160 * n_tensors  # safetensors' JSON header: a fixed cost per tensor
        assert f.stat().st_size == rows["bytes"].iloc[0]
        assert set(load_file(f)) == {f"{m}/{k}" for m in rows["matrix"] for k in factors}
    # W0 once, in full
    w0 = load_file(tmp_path / "w0.safetensors")
    assert sorted(w0) == sorted(m["name"] for m in meta["matrices"])
    assert cb.summary()["snapshot/steps"] == [0, 3, 6] and meta["complete"]


def test_full_ft_stores_row_and_column_summaries_and_matrices_only_where_asked(tmp_path: Path) -> None:
    cfg = SnapshotConfig(schedule="steps", steps=[3, 6], full_weights=["Wq"], full_steps=[6])
    model, cb, _ = snapshot_run(tmp_path, "full", cfg=cfg)
    index = pd.read_parquet(tmp_path / "index.parquet")
    for row in index.itertuples():
        out, inp = next(m["shape"] for m in cb.meta["matrices"] if m["name"] == row.matrix)
        has_w = row.type == "Wq" and row.step in (0, 6)
        assert row.tensor_bytes == 4 * 2 * (out + inp) + (4 * out * inp if has_w else 0), (row.matrix, row.step)
    final = load_file(tmp_path / step_file(6))
    q = next(tr for tr in cb.tracked if tr.ref.type == "Wq")
    assert torch.equal(final[f"{q.ref.name}/W"], q.base.weight.detach())
    assert set(DENSE_SUMMARY) <= {k.split("/")[-1] for k in final}


def test_tracked_matrices_follow_types_and_layers(tmp_path: Path) -> None:
    _, cb, _ = snapshot_run(tmp_path, "lora", cfg=SnapshotConfig(schedule="steps", steps=[2], types=["Wq", "value"],
                                                                 layers=[1]))
    assert sorted(tr.label for tr in cb.tracked) == ["Wq.1", "Wv.1"]


def test_llama_labels_keep_gate_and_up_apart() -> None:
    model, targets, method = tiny_model("lora", "model=tiny_llama")
    labels = [tr.label for tr in find_tracked(model, targets, method)]
    assert len(labels) == len(set(labels)) and {"Wg.0", "Wf1.0", "Wf2.0"} <= set(labels)


# -- online summaries ----------------------------------------------------------------------------------------

def numpy_stats(w0: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """ΔM/ΔD of PAPERS.md by brute force in float64, rows and columns, plus ‖ΔW‖_F and its ratio."""
    out: dict[str, float] = {}
    for axis, a0, a in (("row", w0, w), ("col", w0.T, w.T)):
        m0 = np.array([np.sqrt(np.sum(v * v)) for v in a0])
        m = np.array([np.sqrt(np.sum(v * v)) for v in a])
        cos = np.array([np.dot(v, v0) / (np.sqrt(np.dot(v, v)) * np.sqrt(np.dot(v0, v0))) for v, v0 in zip(a, a0)])
        out[f"dM_{axis}"] = float(np.mean(np.abs(m - m0)))
        out[f"dD_{axis}"] = float(np.mean(1 - cos))
    out["dW_fro"] = float(np.linalg.norm(w - w0))
    out["dW_rel"] = out["dW_fro"] / float(np.linalg.norm(w0))
    s = np.linalg.svd(w - w0, compute_uv=False)
    out["stable_rank"] = float(np.sum(s**2) / s[0] ** 2)
    return out


@pytest.mark.parametrize("method", ["full", *ADAPTERS])
def test_online_summaries_equal_numpy_on_the_merged_weights(method: str, tmp_path: Path) -> None:
    """The index (float32, computed in training) against numpy float64 on PEFT's own merged weights."""
    model, cb, logger = snapshot_run(tmp_path, method)
    if method == "full":
        merged = {tr.ref.name: tr.base.weight.detach().double().numpy() for tr in cb.tracked}
    else:
        plain = model.merge_and_unload()
        mods = dict(plain.named_modules())
        merged = {tr.ref.name: mods[tr.ref.name].weight.detach().double().numpy() for tr in cb.tracked}
    index = pd.read_parquet(tmp_path / "index.parquet")
    final = index[index["step"] == 6].set_index("matrix")
    w0 = load_file(tmp_path / "w0.safetensors")
    for name, w in merged.items():
        ref = numpy_stats(w0[name].double().numpy(), w)
        for k in STATS:
            # dense ΔW (or of rank above the power iteration's block): an estimate
            dense = k == "stable_rank" and method in ("full", "dora", "vera")
            tol = 0.05 if dense else 2e-4
            assert final.loc[name, k] == pytest.approx(ref[k], rel=tol, abs=1e-9), (name, k)
    assert (index[index["step"] == 0][list(STATS)] == 0).all().all()
    # the same values went to the metric sinks
    step6 = dict(logger.rows)[6]
    tr = cb.tracked[0]
    assert step6[f"snapshot/{tr.label}/dD_row"] == pytest.approx(final.loc[tr.ref.name, "dD_row"])
    assert "perf/snapshot_ms" in step6


def test_dora_magnitude_for_delta_m_is_the_row_norm_of_the_merged_weight(tmp_path: Path) -> None:
    model, cb, _ = snapshot_run(tmp_path, "dora")
    index = pd.read_parquet(tmp_path / "index.parquet").query("step == 6").set_index("matrix")
    w0 = load_file(tmp_path / "w0.safetensors")
    for tr in cb.tracked:
        m = tr.module.lora_magnitude_vector[tr.adapter].weight.detach().double()
        tr.module.merge()
        row_norm = torch.linalg.norm(tr.base.weight.detach().double(), dim=1)
        tr.module.unmerge()
        m0 = torch.linalg.norm(w0[tr.ref.name].double(), dim=1)
        assert torch.allclose(row_norm, m.abs(), rtol=1e-5)  # ‖row n of m ⊙ V/‖V‖‖ = |m_n|
        expected = float((row_norm - m0).abs().mean())
        assert index.loc[tr.ref.name, "dM_row"] == pytest.approx(expected, rel=1e-4)
        # ... which is |m|, not m: where a magnitude went negative the row norm (and ΔM) sees its absolute value
        assert index.loc[tr.ref.name, "dM_row"] == pytest.approx(float((m.abs() - m0).abs().mean()), rel=1e-4)


def test_spectral_norm_exact_for_low_rank_close_for_dense() -> None:
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    low = torch.randn(3, 40, 8, generator=g, dtype=f64) @ torch.randn(3, 8, 70, generator=g, dtype=f64)
    assert torch.allclose(spectral_norm(low), torch.linalg.matrix_norm(low, ord=2), rtol=1e-10)
    dense = torch.randn(3, 64, 96, generator=g, dtype=f64)
    exact = torch.linalg.matrix_norm(dense, ord=2)
    est = spectral_norm(dense)
    assert ((est <= exact * (1 + 1e-12)) & (est > 0.97 * exact)).all()


def test_merged_weight_formula_batches() -> None:
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    f64 = torch.float64
    t = {"A": torch.randn(2, 3, 7, generator=g, dtype=f64), "B": torch.randn(2, 5, 3, generator=g, dtype=f64),
         "m": torch.rand(2, 5, generator=g, dtype=f64) + 0.5}
    batched = rebuild("magnitude_low_rank", w0, t, 0.5)
    for i in range(2):
        v = w0[i] + 0.5 * t["B"][i] @ t["A"][i]
        assert torch.allclose(batched[i], t["m"][i][:, None] * v / v.norm(dim=1, keepdim=True))


# -- in a run ------------------------------------------------------------------------------------------------

def test_run_writes_snapshots_logs_them_and_leaves_training_unchanged(tiny_cfg: Any, tmp_path: Path) -> None:
    on = run(tiny_cfg("method=dora"), tmp_path / "on")
    off = run(tiny_cfg("method=dora", "snapshot=none"), tmp_path / "off")
    assert on["eval/loss"] == off["eval/loss"]  # snapshots touch neither the weights nor the RNG
    assert not (tmp_path / "off" / "snapshots").exists()
    meta = json.loads((tmp_path / "on" / "snapshots" / "meta.json").read_text())
    assert meta["complete"] and meta["taken"] == [0, 2, 3, 4, 6] and len(meta["matrices"]) == 12
    index = pd.read_parquet(tmp_path / "on" / "snapshots" / "index.parquet")
    assert sorted(index["step"].unique()) == [0, 2, 3, 4, 6] and len(index) == 5 * 12
    lines = [json.loads(x) for x in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(x["step"] for x in lines if "snapshot/Wq.0/dM_row" in x) == [0, 2, 3, 4, 6]
    assert on["snapshot/bytes"] > 0 and on["snapshot/steps"] == [0, 2, 3, 4, 6]


# -- the preset and the benchmark ----------------------------------------------------------------------------

@pytest.mark.parametrize("method, lr", [("full", 5e-5), ("lora", 5e-4), ("dora", 5e-4)])
def test_dora_fig2_preset_composes_for_each_method(method: str, lr: float) -> None:
    p = plan(compose_cfg(["experiment=dora_fig2", f"method={method}", "seed=2"]))
    assert p.total_steps == 2000 and (p.cfg.train.lr or p.cfg.method.lr) == lr
    assert schedule_steps(p.cfg.snapshot, p.total_steps) == [500, 1000, 1500, 2000]
    assert len(select(p.targets, p.cfg.snapshot)) == 36  # MiniLM: 6 layers × 6 matrix types


def test_benchmark_runs_and_reports(tmp_path: Path) -> None:
    from benchmarks.bench_snapshots import main as bench

    out = tmp_path / "bench.json"
    assert bench(["--model", "tiny_bert", "--methods", "dora,full", "--steps", "1", "--warmup", "1", "--repeats", "1",
                  "--preset-steps", "100", "--json", str(out), "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert [r["method"] for r in res["results"]] == ["dora", "full"]
    for r in res["results"]:
        assert r["step_ms"] > 0 and r["snapshot_ms"] > 0 and r["schedule_snapshots"] == 5
        assert r["schedule_pct_of_training"] > 0
    assert "| dora |" in res["markdown"]


def test_non_finite_weights_give_nan_summaries_not_an_error() -> None:
    w0 = torch.randn(2, 6, 5, dtype=torch.float64)
    w = w0.clone()
    w[1, 2, 3] = math.nan
    stats, _ = summarize(w0, w + 0.1)
    assert torch.isfinite(stats[0]).all() and torch.isnan(stats[1]).all()


# -- the W0 store (harness/w0store.py) -----------------------------------------------------------------------

def disk_bytes(root: Path) -> int:
    """Bytes of the files under ``root``, each inode counted once (hard links cost nothing)."""
    seen: dict[tuple[int, int], int] = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def factor_bytes(root: Path) -> int:
    """Bytes of everything in the runs' snapshot folders but W0: factors, index, meta.json."""
    return sum(p.stat().st_size for p in root.rglob("snapshots/*") if p.name != "w0.safetensors")


def test_runs_of_one_base_model_share_one_w0_file(tmp_path: Path) -> None:
    """Three runs (runs/ and multirun/ folders) hold hard links to one <outputs>/w0/<sha256>.safetensors."""
    outputs = tmp_path / "outputs"
    dirs = {"lora": outputs / "runs" / "a", "dora": outputs / "runs" / "b", "adalora": outputs / "multirun" / "s" / "0"}
    for method, d in dirs.items():
        snapshot_run(d / "snapshots", method)
    metas = [json.loads((d / "snapshots" / "meta.json").read_text()) for d in dirs.values()]
    digest = metas[0]["w0"]["checksum"]
    store = outputs / "w0" / f"{digest.removeprefix('sha256:')}.safetensors"
    assert store.is_file() and store.stat().st_nlink == 1 + len(dirs)
    assert [p.name for p in (outputs / "w0").iterdir()] == [store.name]  # no temporaries left
    for d, meta in zip(dirs.values(), metas):
        assert meta["w0"]["checksum"] == digest and meta["w0"]["file"] == "w0.safetensors"
        assert (d / "snapshots" / "w0.safetensors").samefile(store)
        assert (d / "snapshots" / meta["w0"]["store"]).resolve() == store.resolve()
    w0 = store.stat().st_size
    assert disk_bytes(outputs) <= 1.2 * w0 + factor_bytes(outputs)
    # today's layout: a copy in each run, no store
    old = tmp_path / "old"
    for method, d in dirs.items():
        snapshot_run(old / d.relative_to(outputs) / "snapshots", method,
                     cfg=SnapshotConfig(schedule="steps", steps=[3, 6], w0_store="run"))
    assert not (old / "w0").exists() and disk_bytes(old) == 3 * w0 + factor_bytes(old)
    assert json.loads((old / "runs" / "a" / "snapshots" / "meta.json").read_text())["w0"]["store"] is None


def test_concurrent_writers_of_one_w0_end_with_one_good_file(tmp_path: Path) -> None:
    """Threads and processes publishing the same bytes at once: all succeed, one of them wrote, one inode."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from harness.w0store import checksum, publish

    data = bytes(np.random.default_rng(0).integers(0, 256, 1 << 22, dtype=np.uint8))
    digest = checksum(data)
    barrier = threading.Barrier(8)

    def write(_: int) -> tuple[Path, bool]:
        barrier.wait()
        return publish(tmp_path / "threads", data, digest)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
        results += list(pool.map(publish, [tmp_path / "procs"] * 4, [data] * 4, [digest] * 4))
    for store in ("threads", "procs"):
        files = list((tmp_path / store).iterdir())
        assert len(files) == 1 and checksum(files[0].read_bytes()) == digest
        mine = [written for path, written in results if path == files[0]]
        assert len(mine) in (8, 4) and sum(mine) == 1  # exactly one writer's file, the others reused it


def test_a_corrupt_store_file_is_detected_and_written_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from analysis.decomposition import open_snapshots

    outputs = tmp_path / "outputs"
    snapshot_run(outputs / "runs" / "a" / "snapshots", "lora")
    store = next((outputs / "w0").iterdir())
    raw = bytearray(store.read_bytes())
    raw[-3] ^= 0xFF
    store.write_bytes(bytes(raw))  # in place: the run's hard link (same inode) is corrupt too
    problems = open_snapshots(outputs / "runs" / "a").verify()
    assert len(problems) == 1 and "checksum mismatch" in problems[0] and store.name in problems[0]
    with caplog.at_level("WARNING", logger="harness.w0store"):
        snapshot_run(outputs / "runs" / "b" / "snapshots", "lora")
    assert "corrupt store file" in caplog.text
    meta = json.loads((outputs / "runs" / "a" / "snapshots" / "meta.json").read_text())
    assert checksum_of(store) == meta["w0"]["checksum"]  # rewritten
    assert open_snapshots(outputs / "runs" / "a").verify() == []  # a's own link is bad, the store is found


def checksum_of(path: Path) -> str:
    from harness.w0store import checksum

    return checksum(path.read_bytes())


def test_default_store_and_the_option() -> None:
    from harness.config import config_hash
    from harness.w0store import default_store, resolve_store

    assert default_store(Path("/o/runs/lora_x")) == Path("/o/w0")
    assert default_store(Path("/o/multirun/2024_ab/3_dora")) == Path("/o/w0")
    assert default_store(Path("/scratch/exp/run1")) == Path("/scratch/exp/w0")
    assert resolve_store("run", Path("/o/runs/x")) is None
    assert resolve_store("/data/w0", Path("/o/runs/x")) == Path("/data/w0")
    # where W0 is kept does not change the run: same config hash, same run folder
    hashes = {config_hash(to_typed(compose_cfg([*TINY, "method=lora", *o])))
              for o in ([], ["snapshot.w0_store=run"], ["snapshot.w0_store=/data/w0"])}
    assert len(hashes) == 1
