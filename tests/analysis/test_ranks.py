"""analysis.ranks: rank records and PEFT rank patterns → DataFrames → heatmap tables, shares, the verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st
import pytest

from analysis import ranks as R
from harness.methods.adalora import RANKS_FILE, budget_formula
from tests.conftest import SHARED

PEFT_FILE = SHARED / "data" / "peft-method-comparison" / "adalora--llama-3.2-3B-rank32.json"
TYPES = ("Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2")
BERT = {"Wq": "attention.self.query", "Wk": "attention.self.key", "Wv": "attention.self.value",
        "Wo": "attention.output.dense", "Wf1": "intermediate.dense", "Wf2": "output.dense"}


def make_run(run_dir: Path, *, seed: int, final: Sequence[Sequence[int]], init_r: int = 6, target_r: int = 4,
             total: int = 20, tinit: int = 2, tfinal: int = 6, status: str = "done") -> Path:
    """A run folder as the harness writes it: run.json + adalora_ranks.jsonl (final[layer][type index])."""
    run_dir.mkdir(parents=True)
    n_layers = len(final)
    mats = [{"name": f"bert.encoder.layer.{i}.{BERT[t]}", "layer": i, "type": t, "d_in": 8, "d_out": 8,
             "init_r": init_r} for i in range(n_layers) for t in TYPES]
    n = len(mats)
    header = {"kind": "header", "matrices": mats, "init_budget": n * init_r, "target_budget": n * target_r,
              "total_steps": total, "tinit": tinit, "tfinal": tfinal, "deltaT": 1, "init_r": init_r,
              "target_r": target_r}
    flat = [r for layer in final for r in layer]
    assert sum(flat) == n * target_r
    mid = [min(init_r, r + 1) for r in flat]
    end = total - tfinal
    recs = [(0, "init", [init_r] * n), (tinit + 2, "budget", mid), (end, "final", flat), (total, "final", flat)]
    lines = [json.dumps(header)]
    for step, phase, ranks in recs:
        f = budget_formula(step, b0=n * init_r, bT=n * target_r, total=total, tinit=tinit, tfinal=tfinal)
        lines.append(json.dumps({"step": step, "phase": phase, "budget": f, "formula": f, "kept": sum(ranks),
                                 "ranks": ranks}))
    (run_dir / RANKS_FILE).write_text("\n".join(lines) + "\n")
    (run_dir / "run.json").write_text(json.dumps({"status": status, "seed": seed, "task": "rte", "model": "tiny",
                                                  "method": "adalora"}))
    return run_dir


# three layers; FFN and the top layer get more
FINAL_A = [[3, 3, 3, 3, 4, 4], [4, 4, 4, 4, 5, 5], [4, 4, 4, 4, 5, 5]]
FINAL_B = [[3, 3, 3, 3, 4, 4], [4, 4, 4, 4, 5, 5], [4, 4, 4, 5, 5, 4]]


def test_peft_file_rank_pattern_matches_file() -> None:
    data = json.loads(PEFT_FILE.read_text())
    rp = data["run_info"]["peft_config"]["rank_pattern"]
    df = R.from_peft_json(PEFT_FILE)
    assert len(df) == len(rp) == 56 and df["layer"].nunique() == 28
    assert set(df["row"]) == {"Wq", "Wv"}
    for t, proj in (("Wq", "q_proj"), ("Wv", "v_proj")):
        want = sum(sum(v) for k, v in rp.items() if f".{proj}." in k)
        assert df.loc[df["type"] == t, "rank"].sum() == want
    assert df["rank"].sum() == 32 * 56  # b(T) = target_r · n
    assert (df["init_r"] == 64).all()
    zero = df[df["rank"] == 0]
    assert set(zip(zero["layer"], zero["type"])) == {(0, "Wq"), (3, "Wq")}
    mean, std, n = R.heatmap_table(df)
    assert list(mean.index) == ["Wq", "Wv"] and list(mean.columns) == list(range(28))
    assert mean.loc["Wv", 0] == 60 and std.isna().all().all() and (n == 1).all().all()


def test_adapter_config_with_llama_gate_and_up(tmp_path: Path) -> None:
    """Llama's gate_proj, up_proj and down_proj are three types (Wg, Wf1, Wf2): three heatmap rows, one FFN group."""
    rp = {}
    for i in range(2):
        for mod, r in (("self_attn.q_proj", 2), ("mlp.gate_proj", 3), ("mlp.up_proj", 1), ("mlp.down_proj", 0)):
            rp[f"model.layers.{i}.{mod}.lora_E"] = [True] * r + [False] * (4 - r)
    f = tmp_path / "adapter_config.json"
    f.write_text(json.dumps({"peft_type": "ADALORA", "target_r": 2, "init_r": 4, "total_step": 10, "rank_pattern": rp}))
    df = R.from_peft_json(f)
    assert R.row_order(df["row"]) == ["Wq", "Wg", "Wf1", "Wf2"]
    mean, _, _ = R.heatmap_table(df)
    assert mean.loc["Wg"].tolist() == [3, 3] and mean.loc["Wf1"].tolist() == [1, 1] and mean.loc["Wf2"].tolist() == [0, 0]
    shares = R.allocation_shares(df)
    assert shares["ffn_mean"].tolist() == [4 / 3] and shares["attn_mean"].tolist() == [2]
    assert R.verdict(shares)["line"].startswith("FFN (Wg+Wf1+Wf2) 67% of the final budget (uniform 75%)")


def test_records_before_wg_keep_gate_and_up_apart(tmp_path: Path) -> None:
    """A rank record written when gate_proj and up_proj were both Wf1: two sub-rows, both counted as FFN."""
    df = pd.DataFrame([{"matrix": f"model.layers.{i}.mlp.{m}", "layer": i, "type": "Wf1", "rank": r, "run_dir": "a"}
                       for i in range(2) for m, r in (("gate_proj", 3), ("up_proj", 1))])
    df = R.with_rows(df)
    assert R.row_order(df["row"]) == ["Wf1 (gate_proj)", "Wf1 (up_proj)"]


def test_load_runs_pools_seeds(tmp_path: Path) -> None:
    make_run(tmp_path / "a", seed=0, final=FINAL_A)
    make_run(tmp_path / "b", seed=1, final=FINAL_B)
    make_run(tmp_path / "c", seed=2, final=FINAL_B, status="failed")
    long = R.load_allocations([tmp_path])
    assert long["run_dir"].nunique() == 2  # the failed run is left out
    assert set(long["step"]) == {0, 4, 14, 20}
    final = R.final_ranks(long)
    assert (final["step"] == 20).all() and len(final) == 2 * 18
    mean, std, n = R.heatmap_table(final)
    assert list(mean.index) == list(TYPES) and list(mean.columns) == [0, 1, 2]
    assert mean.loc["Wo", 2] == 4.5 and math.isclose(std.loc["Wo", 2], np.std([4, 5], ddof=1))
    assert mean.loc["Wf2", 2] == 4.5 and (n == 2).all().all()
    assert R.load_allocations([tmp_path], include_unfinished=True)["run_dir"].nunique() == 3
    (cond, sub), = R.conditions(long)
    assert cond == "rte_tiny_b4_T20" and len(sub) == len(long)


def test_shares_and_verdict(tmp_path: Path) -> None:
    make_run(tmp_path / "a", seed=0, final=FINAL_A)
    make_run(tmp_path / "b", seed=1, final=FINAL_B)
    final = R.final_ranks(R.load_allocations([tmp_path]))
    shares = R.allocation_shares(final)
    a = shares.iloc[0]
    kept = sum(map(sum, FINAL_A))
    assert a["kept"] == kept == 18 * 4
    assert math.isclose(a["ffn_share"], (4 + 4 + 5 + 5 + 5 + 5) / kept)
    assert math.isclose(a["ffn_uniform"], 1 / 3) and math.isclose(a["top_uniform"], 1 / 3)
    assert math.isclose(a["mean_Wf1"], 14 / 3) and math.isclose(a["attn_mean"], (4 * 3 + 4 * 4 + 4 * 4) / 12)
    assert a["top_layers"] == "2" and a["bottom_layers"] == "0"
    assert math.isclose(a["top_share"], 26 / kept) and math.isclose(a["bottom_share"], 20 / kept)
    v = R.verdict(shares)
    d = (shares["ffn_mean"] - shares["attn_mean"]).to_numpy()
    lo, hi = st.t.interval(0.95, 1, loc=d.mean(), scale=st.sem(d))
    assert (v["ffn_diff"].low, v["ffn_diff"].high) == pytest.approx((lo, hi))
    # both runs favour FFN, but two seeds this close decide nothing unless the interval excludes 0
    assert v["ffn"] == ("agrees" if lo > 0 else "inconclusive") and v["ffn_runs"] == 2
    assert "Student-t interval over 2 seeds" in v["line"]
    assert set(v["per_type"]) == set(TYPES)
    summary = R.summarize_shares(shares)
    assert summary.loc["ffn_share", "n"] == 2 and summary.loc["ffn_share", "low"] < summary.loc["ffn_share", "mean"]

    # one run: descriptive, never "agrees"
    one = R.verdict(shares.iloc[:1])
    assert one["ffn"] == one["top"] == "descriptive" and "1 seed: descriptive" in one["line"]


@pytest.mark.parametrize(("diffs", "expected"), [
    ((0.5, 0.6, 0.55), "agrees"),       # interval above 0
    ((-0.5, -0.6, -0.55), "disagrees"),  # below 0
    ((0.2, -0.1, 0.3), "inconclusive"),  # contains 0: a positive mean alone is not agreement
])
def test_verdict_is_decided_by_the_interval_over_seeds(diffs: tuple[float, ...], expected: str) -> None:
    shares = pd.DataFrame({"ffn_mean": [2 + d for d in diffs], "attn_mean": [2.0] * 3,
                           "ffn_share": [0.4] * 3, "ffn_uniform": [1 / 3] * 3, "n_layers": [6] * 3,
                           "top_mean": [2 + d for d in diffs], "bottom_mean": [2.0] * 3, "top_share": [0.4] * 3,
                           "bottom_share": [0.3] * 3, "top_uniform": [1 / 3] * 3,
                           **{f"mean_{t}": [2.0] * 3 for t in TYPES}})
    v = R.verdict(shares)
    assert v["ffn"] == v["top"] == expected
    p = st.ttest_1samp(diffs, 0).pvalue  # both claims have the same differences here: Holm over 2 gives 2p each
    assert v["ffn_p"] == pytest.approx(p) and v["ffn_p_holm"] == v["top_p_holm"] == pytest.approx(min(1.0, 2 * p))
    assert "Holm over the 2 verdicts of this figure" in v["line"]


def test_layer_thirds() -> None:
    assert R.layer_thirds(range(12)) == ([0, 1, 2, 3], [8, 9, 10, 11])
    assert R.layer_thirds(range(6)) == ([0, 1], [4, 5])
    assert R.layer_thirds(range(28))[1] == list(range(19, 28))
    assert R.layer_thirds([0, 1]) == ([0], [1])


def test_over_time_budget_curve_and_steps(tmp_path: Path) -> None:
    make_run(tmp_path / "a", seed=0, final=FINAL_A)
    make_run(tmp_path / "b", seed=1, final=FINAL_B)
    long = R.load_allocations([tmp_path])
    curves = R.rank_over_time(long)
    assert list(curves["type"].cat.categories) == list(TYPES)
    start = curves[curves["step"] == 0]
    assert (start["mean"] == 6).all()
    measured, formula = R.budget_curve(long, R.load_headers([tmp_path]))
    assert list(measured["step"]) == [0, 4, 14, 20]
    assert (measured["kept_mean"].iloc[[0, 2, 3]] == measured["formula"].iloc[[0, 2, 3]]).all()
    assert len(formula) == 21 and formula["formula"].iloc[0] == 108 and formula["formula"].iloc[-1] == 72
    steps = R.default_steps(long)
    assert steps[0] == 4 and steps[-1] == 14
    snap = R.at_steps(long, [5, 20])
    assert set(snap.loc[snap["at"] == 5, "step"]) == {4}


def test_missing_records_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "run.json").write_text(json.dumps({"status": "done"}))
    with pytest.raises(FileNotFoundError, match=RANKS_FILE):
        R.load_allocations([tmp_path])
    with pytest.raises(ValueError, match="rank_pattern"):
        f = tmp_path / "lora.json"
        f.write_text(json.dumps({"run_info": {"peft_config": {"peft_type": "LORA"}}}))
        R.from_peft_json(f)


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", seed=0, final=FINAL_A)
    with open(run / RANKS_FILE, "a") as f:
        f.write('{"step": 21, "ranks": [1, 2')
    header, df = R.read_rank_file(run / RANKS_FILE)
    assert df["step"].max() == 20 and isinstance(df, pd.DataFrame)


def test_the_papers_schedule_equals_the_harness_one() -> None:
    """analysis draws the paper's b(t) from harness.schedules, the schedule the AdaLoRA method trains with (its
    equality with PEFT's own schedule at every step: tests/harness/methods/test_adalora.py)."""
    for total, tinit, tfinal in ((20, 2, 6), (100, 10, 30), (1200, 0, 0), (7, 3, 3)):
        for step in range(total + 2):
            kw = dict(b0=144, bT=96, total=total, tinit=tinit, tfinal=tfinal)
            assert R.budget_formula(step, **kw) == budget_formula(step, **kw), (total, tinit, tfinal, step)


def test_the_rank_file_named_by_the_summary_is_read(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", seed=0, final=[[4] * 6, [4] * 6])
    assert R.rank_file(run) == run / RANKS_FILE
    (run / RANKS_FILE).rename(run / "ranks_v2.jsonl")
    (run / "summary.json").write_text(json.dumps({"adalora/records_file": "ranks_v2.jsonl"}))
    assert R.rank_file(run) == run / "ranks_v2.jsonl"
    assert set(R.load_headers([run])) == {str(run)}
