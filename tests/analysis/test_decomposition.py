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
from scipy import stats as st

from analysis.decomposition import (PAPER_CORRELATION, SnapshotError, correlation_table, decomposition_table,
                                    markdown_table, open_snapshots, pearson_slope, per_run_fits)
from harness.config import SnapshotConfig
from harness.snapshots import step_file
from tests.harness.test_snapshots import ADAPTERS, numpy_stats, snapshot_run


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
            assert math.isnan(r.dW_fro) and r.dD_out == pytest.approx(r.online_dD_out, rel=1e-5)
            continue
        w = snaps.merged_weight(r.matrix, r.step).numpy()
        ref = numpy_stats(snaps.w0(r.matrix).double().numpy(), w)
        # the analysis names the axes by meaning: torch's rows are output features, columns input features
        for k, ref_k in (("dM_out", "dM_row"), ("dD_out", "dD_row"), ("dM_in", "dM_col"), ("dD_in", "dD_col"),
                         ("dW_fro", "dW_fro"), ("dW_rel", "dW_rel")):
            assert getattr(r, k) == pytest.approx(ref[ref_k], rel=1e-9), (r.matrix, k)  # float64 both
            assert getattr(r, f"online_{k}") == pytest.approx(ref[ref_k], rel=2e-4), (r.matrix, k)  # float32 online


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


def test_pearson_slope_equals_the_normal_equations() -> None:
    x = np.linspace(0.0, 1.0, 20)
    r, slope, intercept = pearson_slope(x, 3 * x + 1)
    assert (r, slope, intercept) == pytest.approx((1.0, 3.0, 1.0))
    y = -2 * x + np.random.default_rng(0).normal(0, 0.3, x.size)
    dx, dy = x - x.mean(), y - y.mean()
    b = (dx @ dy) / (dx @ dx)
    assert pearson_slope(x, y) == pytest.approx((np.corrcoef(x, y)[0, 1], b, y.mean() - b * x.mean()), rel=1e-12)
    assert math.isnan(pearson_slope(np.ones(4), np.arange(4.0))[0])  # constant x: no line
    r, slope, _ = pearson_slope(np.arange(4.0), np.ones(4))  # constant y: flat line, no correlation
    assert math.isnan(r) and slope == 0.0


def _points(method: str, seed: int, coupling: float, rng: np.random.Generator, *, layers: int = 6,
            checkpoints: int = 4, noise: float = 0.02) -> list[dict]:
    """(layer, checkpoint) points of one run: ΔD grows along training, ΔM = coupling·ΔD + noise."""
    rows = []
    for cp in range(1, checkpoints + 1):
        for layer in range(layers):
            d = 0.01 * cp + 0.004 * layer + rng.normal(0, 0.002)
            rows.append({"run_dir": f"{method}{seed}", "method": method, "seed": seed, "layer": layer, "type": "Wq",
                         "checkpoint": cp, "step": cp * 10, "dD_out": d, "dM_out": coupling * d + rng.normal(0, noise),
                         "dD_in": d, "dM_in": d})
    return rows


def test_per_run_fits_pool_the_points_of_one_run_as_the_paper() -> None:
    rng = np.random.default_rng(3)
    pts = pd.DataFrame(_points("lora", 0, 2.0, rng) + _points("lora", 1, -1.0, rng))
    fits = per_run_fits(pts, axis="out").set_index("seed")
    for seed in (0, 1):
        g = pts[pts["seed"] == seed]
        lr = st.linregress(g["dD_out"], g["dM_out"])
        assert fits.loc[seed, "pearson"] == pytest.approx(lr.rvalue, rel=1e-12)
        assert fits.loc[seed, "slope"] == pytest.approx(lr.slope, rel=1e-12)
        assert fits.loc[seed, "n_points"] == 24
        within = np.mean([st.pearsonr(c["dD_out"], c["dM_out"])[0] for _, c in g.groupby("checkpoint")])
        assert fits.loc[seed, "pearson_within_checkpoint"] == pytest.approx(within, rel=1e-12)


def test_headline_is_the_mean_over_seeds_with_a_t_interval() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for seed, c in enumerate((1.5, 2.5, 0.5)):
        rows += _points("dora", seed, c, rng)
    pts = pd.DataFrame(rows)
    table = correlation_table(pts, axis="out").iloc[0]
    fits = per_run_fits(pts, axis="out")
    v = fits["slope"].to_numpy()
    lo, hi = st.t.interval(0.95, 2, loc=v.mean(), scale=st.sem(v))
    assert table["slope"] == pytest.approx(v.mean(), rel=1e-12)
    assert (table["slope_low"], table["slope_high"]) == pytest.approx((lo, hi), rel=1e-9)
    z = np.arctanh(fits["pearson"].to_numpy())  # r: averaged on Fisher's z scale, interval mapped back
    lo, hi = st.t.interval(0.95, 2, loc=z.mean(), scale=st.sem(z))
    assert (table["pearson"], table["pearson_low"], table["pearson_high"]) == pytest.approx(
        (np.tanh(z.mean()), np.tanh(lo), np.tanh(hi)), rel=1e-9)
    assert table["n_seeds"] == 3 and table["points_per_run"] == 24
    # the pooled r is there, labelled descriptive, and is not the headline
    pooled = st.pearsonr(pts["dD_out"], pts["dM_out"])[0]
    assert table["pooled_pearson"] == pytest.approx(pooled) and table["pooled_pearson"] != table["pearson"]


def test_one_seed_is_descriptive_with_no_interval() -> None:
    pts = pd.DataFrame(_points("dora", 0, -1.0, np.random.default_rng(5)))
    row = correlation_table(pts, axis="out").iloc[0]
    assert math.isnan(row["pearson_low"]) and math.isnan(row["slope_high"])
    assert row["verdict"] == "descriptive" and row["interval"] == "descriptive (1 seed)"
    assert "(1 seed)" in markdown_table(correlation_table(pts, axis="out"))


@pytest.mark.parametrize(("stat", "mean", "spread", "noise"), [
    # r ≈ −0.3 per run, as DoRA's in the paper (10 s: -m slow; the r ≈ +0.7 case checks the same Fisher-z interval)
    pytest.param("pearson", -0.5, 0.5, 0.02, marks=pytest.mark.slow),
    ("pearson", 1.0, 0.5, 0.01),    # r ≈ +0.7, as LoRA's
    ("slope", -1.0, 0.8, 0.01),     # the sign of the coupling itself varies between seeds
])
def test_seed_level_intervals_cover_the_truth_when_the_coupling_varies_by_seed(stat: str, mean: float, spread: float,
                                                                               noise: float) -> None:
    """Simulated ground truth: each run's true coupling is drawn anew (between-seed variation), its points lie on
    one trajectory with noise. The truth is the population value of the per-run statistic (Monte Carlo over
    100,000 runs: E[slope]; for r, tanh(E[atanh r]), the quantity the Fisher-z mean estimates); the 95%
    interval over 3 seeds must cover it 93–97% of the time over 1,000 simulated sweeps."""
    rng = np.random.default_rng(2024)
    n, cps, layers = 100_000, 4, 6
    cp = np.repeat(np.arange(1, cps + 1), layers)
    lay = np.tile(np.arange(layers), cps)
    d = 0.01 * cp + 0.004 * lay + rng.normal(0, 0.002, (n, cps * layers))  # as _points draws them
    m = rng.normal(mean, spread, (n, 1)) * d + rng.normal(0, noise, d.shape)
    dx, dy = d - d.mean(1, keepdims=True), m - m.mean(1, keepdims=True)
    sxy, sxx, syy = (dx * dy).sum(1), (dx * dx).sum(1), (dy * dy).sum(1)
    truth = (float(np.tanh(np.mean(np.arctanh(sxy / np.sqrt(sxx * syy))))) if stat == "pearson"
             else float(np.mean(sxy / sxx)))

    covered, sweeps, chunk = 0, 1000, 100
    for _ in range(sweeps // chunk):
        # `chunk` simulated sweeps, each a panel of one table: a panel's interval is of its own runs only (the
        # numbers of one table per sweep, drawn in the same order; three times faster)
        rows = []
        for k in range(chunk):
            for seed in range(3):
                rows += [{**r, "panel": f"sweep {k}"}
                         for r in _points("dora", seed, rng.normal(mean, spread), rng, noise=noise)]
        table = correlation_table(pd.DataFrame(rows), axis="out")
        assert len(table) == chunk and (table["n_seeds"] == 3).all()
        covered += int(((table[f"{stat}_low"] <= truth) & (truth <= table[f"{stat}_high"])).sum())
    assert 0.93 <= covered / sweeps <= 0.97, covered / sweeps


def test_correlation_table_verdicts_against_the_paper() -> None:
    rng = np.random.default_rng(1)
    rows = []
    # FT: negative in every seed (paper −0.62: agrees); LoRA: negative (paper +0.83: disagrees);
    # DoRA: seeds of both signs (inconclusive)
    for method, couplings in (("full", (-2, -2.5, -1.5)), ("lora", (-2, -1.5, -2.5)), ("dora", (2, -2, 0.1))):
        for seed, c in enumerate(couplings):
            rows += _points(method, seed, c, rng, noise=0.005)
    pts = pd.DataFrame(rows)
    table = correlation_table(pts, axis="out")
    assert list(table["method"]) == ["full", "lora", "dora"]
    assert table.set_index("method")["paper_pearson"].to_dict() == PAPER_CORRELATION
    assert table.set_index("method")["verdict"].to_dict() == {"full": "agrees", "lora": "disagrees",
                                                             "dora": "inconclusive"}
    assert (table["n_seeds"] == 3).all() and (table["n_points"] == 72).all()
    md = markdown_table(table)
    assert "-0.62" in md and "**disagrees**" in md and "0.014–0.022" in md and "per output feature" in md
    # the per-input-feature axis and other matrix types are not the paper's quantity: no paper value, no verdict
    other = correlation_table(pts, axis="in")
    assert other["paper_pearson"].isna().all() and (other["verdict"] == "no paper value").all()
    wv = correlation_table(pts.assign(type="Wv"), axis="out")
    assert wv["paper_pearson"].isna().all() and (wv["verdict"] == "no paper value").all()


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


@pytest.mark.parametrize("method", ["full", "lora", "dora", "adalora"])
def test_folders_written_before_forms_are_migrated(method: str, tmp_path: Path) -> None:
    """meta.json of format 2 names no rebuild form (the code before forms wrote ``kind`` = the method and its
    tensors): the form is inferred from the stored tensors, and the rebuilt weights and ΔM/ΔD are unchanged."""
    cfg = SnapshotConfig(schedule="steps", steps=[3, 6], full_weights=["Wq"])
    _, cb, _ = snapshot_run(tmp_path / "snapshots", method, cfg=cfg)
    names = [tr.ref.name for tr in cb.tracked if method != "full" or tr.ref.type == "Wq"]
    new = open_snapshots(tmp_path)
    expected = {n: new.merged_weight(n, 6) for n in names}
    meta_path = tmp_path / "snapshots" / "meta.json"
    meta = json.loads(meta_path.read_text())
    forms = {m["name"]: m.pop("form") for m in meta["matrices"]}
    meta["format_version"] = 2
    meta_path.write_text(json.dumps(meta))
    old = open_snapshots(tmp_path)
    assert old.matrices["form"].to_dict() == forms
    for n in names:
        assert torch.equal(old.merged_weight(n, 6), expected[n]), n
    if method == "full":  # summaries only: ΔM/ΔD from the stored vectors, as before
        other = next(tr.ref.name for tr in cb.tracked if tr.ref.type != "Wq")
        assert old.recompute(other, 6) == pytest.approx(new.recompute(other, 6), nan_ok=True)


@pytest.mark.parametrize("tensors, form", [
    (["A", "B"], "low_rank"), (["m", "A", "B"], "magnitude_low_rank"), (["A", "E", "B"], "gated_low_rank"),
    (["row_dm", "row_dd", "col_dm", "col_dd"], "dense"), (["row_dm", "row_dd", "col_dm", "col_dd", "W"], "dense"),
])
def test_legacy_tensors_name_their_form(tensors: list[str], form: str) -> None:
    from harness.snapshot_format import form_of

    assert form_of({"name": "x", "tensors": tensors}) == form
    with pytest.raises(ValueError, match="match no known form"):
        form_of({"name": "x", "tensors": ["Z"]})


def test_lora_at_two_learning_rates_is_two_panels_never_pooled() -> None:
    from analysis.compare import with_variants
    from analysis.decomposition import panel_label, panels

    runs = pd.DataFrame({"run_dir": ["a0", "a1", "b0", "b1", "d0"], "method": ["lora"] * 4 + ["dora"]})
    cfg = {rd: {"method": {"name": m, "lr": lr}, "seed": i % 2}
           for i, (rd, m, lr) in enumerate(zip(runs["run_dir"], runs["method"], [1e-3, 1e-3, 5e-4, 5e-4, 1e-3]))}
    assert with_variants(runs, cfg, by=("method",))["variant"].tolist() == ["method.lr=0.001"] * 2 + \
        ["method.lr=0.0005"] * 2 + [""]
    rng = np.random.default_rng(9)
    rows = []
    for variant, coupling in (("method.lr=0.001", 2.0), ("method.lr=0.0005", -2.0)):
        for seed in range(3):
            rows += [{**p, "run_dir": f"{variant}{seed}", "variant": variant}
                     for p in _points("lora", seed, coupling + 0.2 * seed, rng, noise=0.005)]
    pts = pd.DataFrame(rows)
    pts["panel"] = panels(pts)
    table = correlation_table(pts, axis="out")
    assert sorted(panel_label(p) for p in table["panel"]) == ["LoRA · method.lr=0.0005", "LoRA · method.lr=0.001"]
    assert table.set_index("panel")["pearson"].map(np.sign).to_dict() == {"lora · method.lr=0.0005": -1.0,
                                                                          "lora · method.lr=0.001": 1.0}
    assert (table["n_seeds"] == 3).all() and table.attrs["family"] == 2


def test_sign_and_value_answers_with_holm_over_the_figure() -> None:
    from analysis import stats as S

    rng = np.random.default_rng(1)
    rows = []
    for method, couplings in (("full", (-2, -2.5, -1.5)), ("lora", (-2, -1.5, -2.5)), ("dora", (2, -2, 0.1))):
        for seed, c in enumerate(couplings):
            rows += _points(method, seed, c, rng, noise=0.005)
    table = correlation_table(pd.DataFrame(rows), axis="out")
    fits = per_run_fits(pd.DataFrame(rows).assign(panel=lambda d: d["method"]), axis="out")
    ps, pvs = [], []
    for m in table["method"]:
        z = np.arctanh(fits.loc[fits["method"] == m, "pearson"].to_numpy())
        ps.append(st.ttest_1samp(z, 0).pvalue)
        pvs.append(st.ttest_1samp(z, np.arctanh(PAPER_CORRELATION[m])).pvalue)
    assert list(table["p"]) == pytest.approx(ps) and list(table["p_value"]) == pytest.approx(pvs)
    assert list(table["p_holm"]) == pytest.approx(list(S.holm(ps)))
    assert list(table["p_value_holm"]) == pytest.approx(list(S.holm(pvs)))
    for r in table.itertuples():
        assert r.value == ("inside" if r.pearson_low <= r.paper_pearson <= r.pearson_high else "outside")
    assert "Holm over the 3 verdicts of this figure" in markdown_table(table)


def test_a_verdict_resting_on_runs_that_did_not_learn_says_so() -> None:
    """Runs whose dev metric sat at chance are counted per panel and named beside the verdict; points written
    before the flag (no column) count none."""
    from analysis.compare import not_learned
    from analysis.decomposition import markdown_table

    rng = np.random.default_rng(11)
    rows = []
    for seed in range(3):
        rows += [{**p, "run_dir": f"dora{seed}", "not_learned": seed == 1} for p in _points("dora", seed, -1.0, rng)]
    pts = pd.DataFrame(rows)
    table = correlation_table(pts, axis="out")
    assert table["not_learned"].tolist() == [1]
    assert per_run_fits(pts, axis="out")["not_learned"].tolist() == [False, True, False]
    assert "rests on 1 run(s) that did not learn" in markdown_table(table)
    assert correlation_table(pts.drop(columns=["not_learned"]), axis="out")["not_learned"].tolist() == [0]
    # the flag comes from the runs' records: accuracy at the dev majority rate is within chance
    runs = pd.DataFrame({"main_metric": ["accuracy"] * 2, "eval/accuracy": [0.509, 0.88],
                         "dev_majority_rate": [0.509, 0.509], "dev_examples": [872, 872]})
    assert not_learned(runs).tolist() == [True, False]
