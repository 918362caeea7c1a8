"""Rebuilding merged weights from snapshots (against PEFT's merge), ΔM/ΔD, bad files, correlations."""

from __future__ import annotations

import copy
import math
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
