"""Rebuilding merged weights from snapshots (against PEFT's merge), ΔM/ΔD, bad files, correlations."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.decomposition import (PAPER_CORRELATION, SnapshotError, bootstrap_fit, correlation_table,
                                    decomposition_table, markdown_table, open_snapshots, pearson_slope)
from harness.config import SnapshotConfig
from harness.snapshots import step_file
from tests.harness.test_snapshots import numpy_stats, snapshot_run

ADAPTERS = ("lora", "dora", "adalora")


def runs_table(*dirs: tuple[Path, str, int]) -> pd.DataFrame:
    """What analysis.load.load_runs returns, for snapshot folders made without a whole run."""
    return pd.DataFrame([{"run_dir": str(d), "method": m, "seed": s} for d, m, s in dirs])


@pytest.mark.parametrize("method", ADAPTERS)
def test_rebuilt_weight_equals_peft_merge_and_unload(method: str, tmp_path: Path) -> None:
    model, cb, _ = snapshot_run(tmp_path / "snapshots", method)
    snaps = open_snapshots(tmp_path)
    plain = copy.deepcopy(model).merge_and_unload()
    mods = dict(plain.named_modules())
    for tr in cb.tracked:
        rebuilt = snaps.merged_weight(tr.ref.name, 6)
        peft_w = mods[tr.ref.name].weight.detach().double()
        assert torch.allclose(rebuilt, peft_w, rtol=1e-5, atol=1e-6), tr.ref.name
        assert not torch.allclose(rebuilt, snaps.w0(tr.ref.name).double())  # it moved: the test means something
        # step 0 rebuilds W0 (B = 0, m = ||W0||, E = 0)
        assert torch.allclose(snaps.merged_weight(tr.ref.name, 0), snaps.w0(tr.ref.name).double(), atol=1e-6)


@pytest.mark.parametrize("method", ADAPTERS)
def test_rebuilt_weight_reproduces_the_peft_forward(method: str, tmp_path: Path) -> None:
    """The layer's own forward (DoRA: m/||W0 + sBA|| scaling of base + LoRA paths) equals x @ W_rebuiltᵀ + b."""
    model, cb, _ = snapshot_run(tmp_path / "snapshots", method)
    model.eval()
    snaps = open_snapshots(tmp_path)
    for tr in cb.tracked:
        x = torch.randn(5, tr.shape[1], generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            y = tr.module(x).double()
        w = snaps.merged_weight(tr.ref.name, 6)
        expected = x.double() @ w.T + tr.base.bias.detach().double()
        assert torch.allclose(y, expected, rtol=1e-4, atol=1e-5), tr.ref.name


@pytest.mark.parametrize("method", ["full", *ADAPTERS])
def test_recomputed_delta_m_delta_d_equal_numpy_on_rebuilt_weights(method: str, tmp_path: Path) -> None:
    cfg = SnapshotConfig(schedule="steps", steps=[3, 6], full_weights=["Wq"])
    _, cb, _ = snapshot_run(tmp_path / "snapshots", method, cfg=cfg)
    points, problems = decomposition_table(runs_table((tmp_path, method, 0)), matrix_type="all")
    assert not problems and len(points) == 2 * len(cb.tracked)
    snaps = open_snapshots(tmp_path)
    for r in points.itertuples():
        if method == "full" and r.type != "Wq":
            # summaries only: ΔM/ΔD from the stored per-row/column vectors, the rest from the index
            assert math.isnan(r.dW_fro) and r.dD_row == pytest.approx(r.online_dD_row, rel=1e-5)
            continue
        w = snaps.merged_weight(r.matrix, r.step).numpy()
        ref = numpy_stats(snaps.w0(r.matrix).double().numpy(), w)
        for k in ("dM_row", "dD_row", "dM_col", "dD_col", "dW_fro", "dW_rel"):
            assert getattr(r, k) == pytest.approx(ref[k], rel=1e-9), (r.matrix, k)  # float64 both
            assert getattr(r, f"online_{k}") == pytest.approx(ref[k], rel=2e-4), (r.matrix, k)  # float32 online


def test_corrupt_and_missing_files_are_named_and_the_rest_goes_on(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        snapshot_run(tmp_path / name / "snapshots", "lora")
    bad = tmp_path / "a" / "snapshots" / step_file(3)
    raw = bytearray(bad.read_bytes())
    raw[-5] ^= 0xFF
    bad.write_bytes(bytes(raw))
    (tmp_path / "b" / "snapshots" / step_file(6)).unlink()
    (tmp_path / "c" / "snapshots" / "index.parquet").write_bytes(b"not parquet")
    runs = runs_table((tmp_path / "a", "lora", 0), (tmp_path / "b", "lora", 1), (tmp_path / "c", "lora", 2))
    points, problems = decomposition_table(runs, matrix_type="Wq")
    text = "\n".join(problems)
    assert str(bad) in text and "checksum mismatch" in text
    assert str(tmp_path / "b" / "snapshots" / step_file(6)) in text and "missing" in text
    assert str(tmp_path / "c" / "snapshots" / "index.parquet") in text
    # what is intact is still there: a's step 6 and b's step 3
    assert sorted(map(tuple, points[["seed", "step"]].drop_duplicates().to_numpy().tolist())) == [(0, 6), (1, 3)]
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        open_snapshots(tmp_path / "a").merged_weight(points["matrix"].iloc[0], 3)
    assert len(open_snapshots(tmp_path / "a").verify()) == 1


def test_pearson_slope_and_bootstrap_intervals() -> None:
    x = np.linspace(0.0, 1.0, 20)
    r, slope, intercept = pearson_slope(x, 3 * x + 1)
    assert (r, slope, intercept) == pytest.approx((1.0, 3.0, 1.0))
    rng = np.random.default_rng(0)
    y = -2 * x + rng.normal(0, 0.3, x.size)
    fit = bootstrap_fit(x, y, n_boot=500)
    assert fit["pearson_low"] < fit["pearson"] < fit["pearson_high"] < 0
    assert fit["slope_low"] < -2 < fit["slope_high"]
    # seeds that disagree widen the interval (hierarchical bootstrap)
    xs = np.concatenate([x, x, x])
    ys = np.concatenate([x, -x, 0.2 * x]) + rng.normal(0, 0.01, 60)
    pooled = bootstrap_fit(xs, ys, n_boot=500)
    by_seed = bootstrap_fit(xs, ys, np.repeat([0, 1, 2], 20), n_boot=500)
    assert by_seed["slope_high"] - by_seed["slope_low"] > 2 * (pooled["slope_high"] - pooled["slope_low"])
    assert math.isnan(pearson_slope(np.ones(4), np.arange(4.0))[0])


def test_correlation_table_sits_beside_the_paper() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for method, sign in (("full", -1), ("lora", 1), ("dora", 1)):
        for seed in (0, 1):
            for layer in range(3):
                for cp in (1, 2):
                    d = rng.uniform(0.01, 0.02)
                    rows.append({"run_dir": f"{method}{seed}", "method": method, "seed": seed, "layer": layer,
                                 "checkpoint": cp, "step": cp * 10, "dD_row": d, "dM_row": 1 + sign * 5 * d,
                                 "dD_col": d, "dM_col": 1 + 5 * d})
    table = correlation_table(pd.DataFrame(rows), axis="row", n_boot=200)
    assert list(table["method"]) == ["full", "lora", "dora"]
    assert table.set_index("method")["paper_pearson"].to_dict() == PAPER_CORRELATION
    assert table.set_index("method")["sign_matches"].to_dict() == {"full": True, "lora": True, "dora": False}
    assert (table["n_seeds"] == 2).all() and (table["n_points"] == 12).all()
    md = markdown_table(table)
    assert "-0.62" in md and "**no**" in md and "0.014–0.022" in md


# -- W0 in the shared store (harness/w0store.py) -------------------------------------------------------------

def merged_all(run_dir: Path, names: list[str]) -> dict[str, torch.Tensor]:
    snaps = open_snapshots(run_dir)
    assert snaps.verify() == []
    return {n: snaps.merged_weight(n, s) for n in names for s in snaps.steps}


def test_deleting_one_run_or_the_store_breaks_no_other_run(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    a, b = outputs / "runs" / "a", outputs / "runs" / "b"
    _, cb, _ = snapshot_run(a / "snapshots", "lora")
    snapshot_run(b / "snapshots", "dora")
    names = [tr.ref.name for tr in cb.tracked]
    before = merged_all(b, names)
    (store,) = (outputs / "w0").iterdir()
    shutil.rmtree(a)
    assert store.is_file()  # a's folder held only a link
    store.unlink()  # and the store itself: b's hard link keeps W0
    after = merged_all(b, names)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_a_run_referencing_the_store_survives_a_move_and_names_a_lost_store(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Where hard links are refused the run keeps only the store path: found again after moving the outputs
    folder (relative path) and the default store; with the store gone, a SnapshotError names file and fix."""
    import os

    def refuse(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    outputs = tmp_path / "outputs"
    monkeypatch.setattr(os, "link", refuse)
    _, cb, _ = snapshot_run(outputs / "runs" / "a" / "snapshots", "dora")
    monkeypatch.undo()
    names = [tr.ref.name for tr in cb.tracked]
    meta = open_snapshots(outputs / "runs" / "a").meta["w0"]
    name = meta["checksum"].removeprefix("sha256:") + ".safetensors"
    assert meta["file"] is None and meta["store"] == f"../../../w0/{name}"
    assert not (outputs / "runs" / "a" / "snapshots" / "w0.safetensors").exists()
    before = merged_all(outputs / "runs" / "a", names)
    moved = tmp_path / "elsewhere" / "outputs"
    shutil.move(outputs, moved)
    after = merged_all(moved / "runs" / "a", names)
    assert all(torch.equal(after[k], before[k]) for k in before)
    (moved / "w0" / name).unlink()
    snaps = open_snapshots(moved / "runs" / "a")
    with pytest.raises(SnapshotError, match=f"no intact W0 file.*{name}.*Fix"):
        snaps.merged_weight(names[0], 6)
    assert len(snaps.verify()) == 1


def test_runs_of_the_old_layout_stay_readable(tmp_path: Path) -> None:
    """meta.json of format 1 (no store keys) and a W0 copy of its own; a corrupt copy is named."""
    run_dir = tmp_path / "runs" / "old"  # its default store (tmp_path/w0) is this test's own
    _, cb, _ = snapshot_run(run_dir / "snapshots", "lora",
                            cfg=SnapshotConfig(schedule="steps", steps=[3, 6], w0_store="run"))
    meta_path = run_dir / "snapshots" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1
    meta["w0"] = {k: meta["w0"][k] for k in ("file", "checksum", "bytes")}
    meta_path.write_text(json.dumps(meta))
    names = [tr.ref.name for tr in cb.tracked]
    merged_all(run_dir, names)
    w0 = run_dir / "snapshots" / "w0.safetensors"
    assert w0.stat().st_nlink == 1
    raw = bytearray(w0.read_bytes())
    raw[-3] ^= 0xFF
    w0.write_bytes(bytes(raw))
    problems = open_snapshots(run_dir).verify()
    assert len(problems) == 1 and str(w0) in problems[0] and "checksum mismatch" in problems[0]
