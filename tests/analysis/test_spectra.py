"""The suite on real snapshots (tiny models wrapped by every registered method, as a run writes them): every
measure equals the numpy brute force on the rebuilt weights, the factored forms' ΔW = B'A' equals the rebuild,
full FT without stored matrices is named, the similarities equal the brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import spectra as S
from analysis.decomposition import open_snapshots
from harness.config import SnapshotConfig
from harness.families import MATRIX_TYPES
from harness.methods import METHODS
from harness.snapshot_format import FORMS, rebuild
from tests.analysis.measures import brute
from tests.harness.test_snapshots import snapshot_run

ALL = tuple(sorted(METHODS))
FULL_WEIGHTS = SnapshotConfig(schedule="steps", steps=[3, 6], full_weights=list(MATRIX_TYPES))


def run_row(d: Path, method: str, seed: int = 0, budget: float = math.nan, lr: float = 1e-3) -> dict:
    return {"run_dir": str(d), "run": d.name, "method": method, "method_label": None, "method_color": None,
            "budget": budget, "lr": lr, "seed": seed, "task": "sst2", "model": "tiny_bert", "total_steps": 6}


def brute_measures(w0: np.ndarray, w: np.ndarray, top_r: int = 8) -> dict[str, float]:
    delta = w - w0
    r = min(top_r, brute.numerical_rank(delta))
    return {"intruders": brute.intruders(w0, w), "effective_rank": brute.effective_rank(delta),
            "stable_rank": brute.stable_rank(delta), "amplification": brute.amplification(w0, delta, r),
            "w0_alignment": brute.alignment(w0, delta, top_r), "dW_rank": brute.numerical_rank(delta),
            "dW_fro": float(np.linalg.norm(delta))}


@pytest.mark.parametrize("method", ALL)
def test_every_measure_equals_numpy_on_the_rebuilt_weights(method: str, tmp_path: Path, one_thread: None) -> None:
    snapshot_run(tmp_path / "snapshots", method, cfg=FULL_WEIGHTS)
    res = S.compute(pd.DataFrame([run_row(tmp_path, method)]), S.Settings(device="cpu"))
    assert not res.problems
    snaps = open_snapshots(tmp_path)
    got = res.measures.pivot_table(index=["step", "matrix"], columns="measure", values="value")
    assert len(got) == 2 * len(snaps.matrices) and set(got.columns) == set(S.MEASURES)
    for (step, name), row in got.iterrows():
        w0 = snaps.w0(name).double().numpy()
        ref = brute_measures(w0, snaps.merged_weight(name, step).numpy())
        for k, v in ref.items():
            assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-12), (method, step, name, k)
    # the spectrum is ΔW's singular values at the final step, the bases its top-r left singular vectors
    one = res.spectrum[res.spectrum["matrix"] == name]
    delta = snaps.merged_weight(name, 6).numpy() - snaps.w0(name).double().numpy()
    s = np.linalg.svd(delta, compute_uv=False)
    assert one["sigma"].to_numpy()[: len(s)] == pytest.approx(s[: len(one)], rel=1e-5, abs=1e-12)
    assert res.bases[(str(tmp_path), name)].shape[-1] == min(8, brute.numerical_rank(delta))


@pytest.mark.parametrize("form", sorted(S.FACTORS))
def test_factors_rebuild_the_forms_delta(form: str) -> None:
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(12, 9, generator=g, dtype=torch.float64)
    shapes = {"A": (3, 9), "B": (12, 3), "A0": (3, 9), "B0": (12, 3), "E": (3, 1), "b": (12,), "d": (3,)}
    t = {k: torch.randn(shapes[k], generator=g, dtype=torch.float64) for k in FORMS[form].tensors}
    b, a = S.FACTORS[form](t, 0.7)
    assert torch.allclose(b @ a, rebuild(form, w0, t, 0.7) - w0, atol=1e-12)
    assert b.shape[-1] <= FORMS[form].rank_factor * 3  # within the form's rank bound


def test_every_low_rank_form_has_factors() -> None:
    """A form whose ΔW has a rank bound gets the low-rank path (else it silently took the slow dense one)."""
    bounded = {f.name for f in FORMS.values() if f.rank_factor > 0}
    assert bounded == set(S.FACTORS)


def test_full_ft_without_stored_matrices_is_named(tmp_path: Path) -> None:
    snapshot_run(tmp_path / "snapshots", "full")
    res = S.compute(pd.DataFrame([run_row(tmp_path, "full")]), S.Settings(device="cpu"))
    assert res.measures.empty and len(res.problems) == 1 and "snapshot.full_weights" in res.problems[0]


def test_similarities_equal_numpy_and_pair_the_right_runs(tmp_path: Path, one_thread: None) -> None:
    rows = []
    for method, budget, seed, ov in (("full", math.nan, 0, ()), ("full", math.nan, 1, ()), ("lora", 2, 0, ("method.r=2",)),
                                     ("lora", 4, 0, ("method.r=4",)), ("lora", 4, 1, ("method.r=4",))):
        d = tmp_path / f"{method}{budget}_{seed}"
        snapshot_run(d / "snapshots", method, cfg=FULL_WEIGHTS, overrides=ov)
        rows.append(run_row(d, method, seed, budget))
    runs = pd.DataFrame(rows)
    res = S.compute(runs, S.Settings(device="cpu", top_r=3))
    sims = S.similarities(res, runs)
    pairs = set(zip(sims["kind"], sims["run_a"].map(lambda p: Path(p).name), sims["run_b"].map(lambda p: Path(p).name)))
    assert pairs == {("seed", "fullnan_0", "fullnan_1"), ("seed", "lora4_0", "lora4_1"), ("rank", "lora2_0", "lora4_0"),
                     ("reference", "lora2_0", "fullnan_0"), ("reference", "lora4_0", "fullnan_0"),
                     ("reference", "lora4_1", "fullnan_1")}
    snaps = {d: open_snapshots(d) for d in runs["run_dir"]}
    for r in sims.sample(12, random_state=0).itertuples():
        da, db = (snaps[d].merged_weight(r.matrix, 6).numpy() - snaps[d].w0(r.matrix).double().numpy()
                  for d in (r.run_a, r.run_b))
        i, j = min(3, brute.numerical_rank(da)), min(3, brute.numerical_rank(db))
        assert (r.i, r.j) == (i, j)
        assert r.phi == pytest.approx(brute.phi(da, db, i, j), rel=1e-5)
    assert S.reference_methods(res.measures) == ["full"]  # found by the dense form, not by name


def test_the_weight_analysis_code_names_no_method() -> None:
    """No string constant of the suite's modules (docstrings aside) is a registered method's name: methods come from
    the run records and the claims file, the way to rebuild a weight from the recorded snapshot form."""
    import ast

    root = Path(__file__).resolve().parents[2] / "analysis"
    files = [root / "spectra.py", root / "spectra_claims.py", root / "figures_spectra.py", root / "plots" / "spectra.py",
             *sorted((root / "measures").glob("*.py"))]
    found = []
    for f in files:
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found += [(f.name, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs
                  and isinstance(n.value, str) and n.value.lower() in METHODS]
    assert len(files) == 11 and found == []
