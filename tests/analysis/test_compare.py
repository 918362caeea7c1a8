"""Comparison tables: means and intervals over seeds, layouts, formats, best marks, Pareto, curves, CLI, W&B."""

from __future__ import annotations

import importlib.machinery
import json
import math
import sys
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import compare, inputs, labels, render
from analysis.__main__ import build_parser
from analysis.__main__ import main as cli
from harness.metrics import METRICS

# ------------------------------------------------------------------------------------------ synthetic runs

PARAMS = {"full": 22_713_986, "lora": 332_546, "dora": 359_402, "adalora": 502_170}


def write_run(root: Path, name: str, *, method: str = "lora", task: str = "sst2", seed: int = 0,
              budget: Optional[int] = 8, value: float = 0.9, status: str = "done", metric: str = "accuracy",
              lr: Optional[float] = None, model: str = "minilm", wandb: bool = False, group: str = "sweep",
              steps: tuple[int, ...] = (10, 20), train_seconds: float = 10.0, memory: int = 2**30,
              effective: Optional[int] = None, best_selected_on: str = "validation") -> Path:
    """A run folder as the harness writes it (run.json, summary.json, metrics.jsonl) without training."""
    d = root / name
    d.mkdir(parents=True)
    mcfg: dict[str, Any] = {"name": method, "lr": lr or 5e-4, "targets": ["Wq", "Wv"], "layers": None}
    if method in ("lora", "dora"):
        mcfg["r"] = budget
    elif method == "adalora":
        mcfg.update(target_r=budget, init_r=math.ceil(1.5 * budget))
    config = {"method": mcfg, "model": {"name": model, "max_length": 128}, "task": {"name": task},
              "train": {"max_steps": steps[-1], "batch_size": 32, "grad_accum": 1, "eval_every": steps[0],
                        "lr": None, "progress": False, "bf16": True},
              "tracking": {"wandb": wandb, "mode": "offline" if wandb else "disabled", "project": "lora-harness",
                           "entity": None, "group": None, "tags": []},
              "seed": seed, "budget": budget}
    h = f"{method}{task}{seed}{budget}{lr}{model}"
    rec = {"status": status, "started": 1_700_000_000.0 + seed, "ended": 1_700_000_100.0 + seed, "pid": 1,
           "host": "elsewhere", "name": name, "group": group, "method": method, "task": task, "model": model,
           "seed": seed, "config_hash": f"{abs(hash(h)):016x}"[:16], "config": config, "total_steps": steps[-1],
           "environment": {"python": "3.11.7", "torch": "2.4.0", "transformers": "4.45.0", "peft": "0.13.0",
                           "harness": "0.1.0", "platform": "Linux-x86_64", "host": "h", "device": "cpu"},
           "git": {"commit": "0123456789abcdef", "dirty": False}, "error": None if status == "done" else "boom"}
    (d / "run.json").write_text(json.dumps(rec))
    if status != "done":
        return d
    trained = PARAMS.get(method, 1000)
    summary = {"method": method, "task": task, "model": model, "seed": seed, "main_metric": metric,
               "main_metric_value": value, f"eval/{metric}": value, "eval/loss": 0.5, f"best/{metric}": value + 0.01,
               "trainable_params": trained, "effective_params": effective or trained, "steps": steps[-1],
               "train_seconds": train_seconds, "tokens": 1000 * steps[-1], "tokens_per_s": 1000 * steps[-1] / train_seconds,
               "peak_memory_bytes": memory, "peak_memory_kind": "cpu_max_rss", "best_selected_on": best_selected_on}
    (d / "summary.json").write_text(json.dumps(summary))
    with open(d / "metrics.jsonl", "w") as f:
        for i, s in enumerate(steps):
            f.write(json.dumps({"step": s, "train/loss": 1.0 / (i + 1), "perf/tokens_per_s": 1000.0}) + "\n")
            f.write(json.dumps({"step": s, f"eval/{metric}": value - 0.1 * (len(steps) - 1 - i), "eval/loss": 0.5}) + "\n")
    return d


#: (method, budget) → per-task accuracies of seeds 0, 1, 2
VALUES = {
    ("full", None): {"sst2": [0.91, 0.92, 0.90], "rte": [0.70, 0.66, 0.68]},
    ("lora", 8): {"sst2": [0.90, 0.91, 0.93], "rte": [0.64, 0.67, 0.61]},
    ("dora", 8): {"sst2": [0.92, 0.92, 0.93], "rte": [0.69, 0.70, 0.71]},
    ("adalora", 8): {"sst2": [0.89, 0.90, 0.88], "rte": [0.60, 0.62, 0.61]},
}


def make_sweep(root: Path, *, failed: bool = True, wandb: bool = False) -> Path:
    """4 methods × 2 tasks × 3 seeds of synthetic runs (+ one failed run)."""
    sweep = root / "sweep"
    i = 0
    for (method, budget), per_task in VALUES.items():
        for task, vals in per_task.items():
            for seed, v in enumerate(vals):
                write_run(sweep, f"{i}_{method}_{task}_s{seed}", method=method, task=task, seed=seed, budget=budget,
                          value=v, wandb=wandb, train_seconds=10.0 + seed + (30 if method == "full" else 0),
                          memory=(3 if method == "full" else 1) * 2**30,
                          effective=400_000 if method == "adalora" else None)
                i += 1
    if failed:
        write_run(sweep, f"{i}_lora_sst2_s9", method="lora", task="sst2", seed=9, status="failed")
    return sweep


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path)


# ------------------------------------------------------------------------------------------ long table

def bounded_by_hand(vals: list[float]) -> tuple[float, float]:
    """The 95% t-interval of an accuracy mean on the logit scale (delta method), by hand with scipy."""
    from scipy.special import expit, logit

    m, half = np.mean(vals), st.t.ppf(0.975, len(vals) - 1) * st.sem(vals) / (np.mean(vals) * (1 - np.mean(vals)))
    return float(expit(logit(m) - half)), float(expit(logit(m) + half))


def test_long_table_means_and_t_intervals(sweep: Path) -> None:
    runs, skipped, _ = inputs.load_inputs([sweep])
    assert len(runs) == 24
    assert [p.name for p, _ in skipped] == ["24_lora_sst2_s9"] and "failed" in skipped[0][1]
    long = compare.compare(runs)
    assert len(long) == 8
    for (method, budget), per_task in VALUES.items():
        for task, vals in per_task.items():
            row = long[(long.method == method) & (long.task == task)].iloc[0]
            lo, hi = bounded_by_hand(vals)  # accuracy: bounded, the t-interval on the logit scale
            assert row["mean"] == pytest.approx(np.mean(vals))
            assert row["low"] == pytest.approx(lo) and row["high"] == pytest.approx(hi)
            assert row["n"] == 3 and row["seeds"] == "0,1,2" and row["interval"] == "t on logit"
            assert row["budget"] == budget and row["metric"] == "accuracy" and row["higher_is_better"]
            assert row["train_seconds"] == pytest.approx(11.0 + (30 if method == "full" else 0))
            assert row["trainable_params"] == PARAMS[method]
    # rows ordered full, lora, dora, adalora within a task
    assert list(long[long.task == "sst2"].method) == ["full", "lora", "dora", "adalora"]


def test_bounded_metrics_keep_their_intervals_inside(tmp_path: Path) -> None:
    """Accuracy at 0.99 and 1.0 over 2 seeds: the plain t-interval reaches past 1, the table's stays in [0, 1];
    an unbounded metric (mse) keeps the plain t-interval; curves use the bounded one too."""
    for seed, v in enumerate((0.99, 1.0)):
        write_run(tmp_path / "s", f"a{seed}", seed=seed, value=v)
        write_run(tmp_path / "s", f"m{seed}", seed=seed, value=[0.2, 0.5][seed], metric="mse", task="stsb")
    runs, _, metrics = inputs.load_inputs([tmp_path / "s"])
    long = compare.compare(runs).set_index("task")
    assert st.t.interval(0.95, 1, loc=0.995, scale=st.sem([0.99, 1.0]))[1] > 1
    assert 0 <= long.loc["sst2", "low"] <= long.loc["sst2", "high"] <= 1
    assert long.loc["sst2", "interval"] == "t on logit"
    assert (long.loc["stsb", "low"], long.loc["stsb", "high"]) == pytest.approx(
        st.t.interval(0.95, 1, loc=0.35, scale=st.sem([0.2, 0.5]))) and long.loc["stsb", "interval"] == "t"
    cur = compare.curves(runs, metrics)
    assert (cur["high"].dropna()[cur["metric"] == "accuracy"] <= 1).all()


def test_bootstrap_and_best_eval(sweep: Path) -> None:
    runs, _, _ = inputs.load_inputs([sweep])
    long = compare.compare(runs, kind="bootstrap", which="best")
    row = long[(long.method == "lora") & (long.task == "sst2")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean([0.91, 0.92, 0.94]))
    assert row["interval"] == "bootstrap" and row["low"] >= 0.91 - 1e-9 and row["high"] <= 0.94 + 1e-9


def test_best_chosen_on_the_reported_set_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, "a", method="lora", seed=0, best_selected_on="validation")
    b = write_run(tmp_path, "b", method="lora", seed=1, best_selected_on="test")
    runs, _, _ = inputs.load_inputs([tmp_path])
    with pytest.raises(compare.SelectionError, match="task.validation_fraction"):
        compare.compare(runs, which="best")
    assert len(compare.compare(runs)) == 1  # the final evaluation is always reportable
    assert cli(["table", str(tmp_path), "--best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --best: 1 of 2 runs") and str(b) in err[0]


def test_single_seed_has_no_interval_and_says_so(tmp_path: Path) -> None:
    write_run(tmp_path, "a", method="lora", value=0.8)
    runs, _, _ = inputs.load_inputs([tmp_path])
    long = compare.compare(runs)
    assert long.iloc[0]["n"] == 1 and math.isnan(long.iloc[0]["low"])
    text = render.table_text(runs, layout="long")
    assert "– (n=1)" in text and "single seed have no interval" in text


def test_best_marks_follow_direction(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, f"l{seed}", method="lora", task="stsb", seed=seed, value=0.60 + seed * 0.01, metric="mse",
                  train_seconds=5.0)
        write_run(tmp_path, f"d{seed}", method="dora", task="stsb", seed=seed, value=0.20 + seed * 0.01, metric="mse",
                  train_seconds=9.0)
    runs, _, _ = inputs.load_inputs([tmp_path])
    long = compare.compare(runs)
    best = compare.best_mask(long)
    dora = long.index[long.method == "dora"][0]
    lora = long.index[long.method == "lora"][0]
    assert not long.loc[dora, "higher_is_better"]
    assert best.loc[dora, "mean"] and not best.loc[lora, "mean"]  # lower mse wins
    assert best.loc[lora, "train_seconds"] and not best.loc[dora, "train_seconds"]
    md = render.table_text(runs)
    assert "MSE ↓" in md and "**0.2050 ±" in md


def test_every_row_the_data_cannot_tell_from_the_best_is_marked(tmp_path: Path) -> None:
    """Bold = the best mean and every row whose seed-level interval overlaps it; one seed marks nothing."""
    vals = {"full": (0.90, 0.92, 0.91), "lora": (0.89, 0.93, 0.90), "dora": (0.70, 0.71, 0.72)}
    for m, vs in vals.items():
        for seed, v in enumerate(vs):
            write_run(tmp_path / "three", f"{m}{seed}", method=m, seed=seed, value=v, budget=None if m == "full" else 8)
        write_run(tmp_path / "one", f"{m}0", method=m, seed=0, value=vs[0], budget=None if m == "full" else 8)
    runs, _, _ = inputs.load_inputs([tmp_path / "three"])
    long = compare.compare(runs)
    marked = dict(zip(long["method"], compare.best_mask(long)["mean"]))
    assert marked == {"full": True, "lora": True, "dora": False}
    # the same rule as a hand computation with scipy's t-interval
    ivs = {m: st.t.interval(0.95, 2, loc=np.mean(v), scale=st.sem(v)) for m, v in vals.items()}
    assert all(marked[m] == (ivs[m][0] <= ivs["full"][1] and ivs[m][1] >= ivs["full"][0]) for m in vals)
    md = render.table_text(runs)
    assert md.count("**") == 2 * 2 and "every row whose 95% interval overlaps it" in md
    one, _, _ = inputs.load_inputs([tmp_path / "one"])
    md1 = render.table_text(one)
    assert "**" not in md1 and "one seed per cell: descriptive" in md1


def test_paper_claims_get_a_verdict_from_the_seed_level_difference(tmp_path: Path) -> None:
    # DoRA above LoRA in every seed, by more than the noise: agrees; AdaLoRA no different: inconclusive
    vals = {"lora": (0.80, 0.82, 0.81), "dora": (0.85, 0.88, 0.86), "adalora": (0.79, 0.83, 0.82)}
    for m, vs in vals.items():
        for seed, v in enumerate(vs):
            write_run(tmp_path, f"{m}{seed}", method=m, seed=seed, value=v)
    runs, _, _ = inputs.load_inputs([tmp_path])
    v = compare.verdicts(runs).set_index("a")
    d = np.subtract(vals["dora"], vals["lora"])
    lo, hi = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))  # paired over seeds
    assert bool(v.loc["dora", "paired"]) and (v.loc["dora", "low"], v.loc["dora", "high"]) == pytest.approx((lo, hi))
    assert v.loc["dora", "verdict"] == "agrees" and v.loc["adalora", "verdict"] == "inconclusive"
    text = render.table_text(runs)
    assert "Claim DoRA > LoRA (DoRA paper), SST-2" in text and "→ agrees" in text
    # different seed sets: Welch's interval, as scipy computes it
    write_run(tmp_path / "more", "lora3", method="lora", seed=3, value=0.81)
    runs2, _, _ = inputs.load_inputs([tmp_path])
    v2 = compare.verdicts(runs2).set_index("a")
    w = st.ttest_ind(vals["dora"], [*vals["lora"], 0.81], equal_var=False).confidence_interval(0.95)
    assert not bool(v2.loc["dora", "paired"]) and (v2.loc["dora", "low"], v2.loc["dora", "high"]) == pytest.approx(
        (w.low, w.high))


def test_contrasts_are_rederived_with_scipy_from_the_per_run_values(sweep: Path) -> None:
    runs, _, _ = inputs.load_inputs([sweep])
    from io import StringIO

    every = pd.read_csv(StringIO(render.table_text(runs, fmt="csv", layout="long", margin=0.02)))
    cons = every[every["row"] == "contrast"].reset_index(drop=True)
    ps, pes = [], []
    for r in cons.itertuples():
        task = r.task
        a = VALUES[("dora", 8) if r.a.startswith("DoRA") else ("adalora", 8) if r.a.startswith("AdaLoRA")
                   else ("lora", 8)][task]
        b = VALUES[("full", None) if r.b == "Full FT" else ("lora", 8) if r.b.startswith("LoRA")
                   else ("dora", 8)][task]
        assert r.paired and r.n == 3 and r.margin == 0.02  # every configuration ran seeds 0, 1, 2: paired by seed
        if np.ptp(np.subtract(a, b)) < 1e-12:  # the same difference in every seed: no evidence, never decided
            assert math.isnan(r.p) and r.verdict == "undetermined" and r.low == r.high
            ps += [math.nan, math.nan]
            continue
        ref = st.ttest_rel(a, b)
        assert r.difference == pytest.approx(np.mean(np.subtract(a, b)))
        assert (r.low, r.high) == pytest.approx(tuple(ref.confidence_interval()), rel=1e-9)
        assert r.p == pytest.approx(ref.pvalue, rel=1e-9)
        pe = max(st.ttest_rel(np.add(a, 0.02), b, alternative="greater").pvalue,
                 st.ttest_rel(np.subtract(a, 0.02), b, alternative="less").pvalue)
        assert r.p_equiv == pytest.approx(pe, rel=1e-9)
        ps += [ref.pvalue, pe]
    p = np.asarray(ps)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)  # Holm over the table's tested hypotheses, by its definition
    order = ok[np.argsort(p[ok])]
    holm = np.full(len(p), np.nan)
    holm[order] = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[order]))
    assert list(cons["p_holm"]) == pytest.approx(list(holm[0::2]), nan_ok=True)
    assert list(cons["p_equiv_holm"]) == pytest.approx(list(holm[1::2]), nan_ok=True)
    for r in cons[cons["p"].notna()].itertuples():
        word = ("equivalent" if r.p_equiv_holm < 0.05 else ("better" if r.difference > 0 else "worse")
                if r.p_holm < 0.05 else "undetermined")
        assert r.verdict == word


def test_two_learning_rates_are_two_rows_and_a_contrast(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path, f"a{seed}", method="lora", seed=seed, lr=1e-3, value=0.80 + 0.01 * seed)
        write_run(tmp_path, f"b{seed}", method="lora", seed=seed, lr=5e-4, value=0.70 + 0.02 * seed)
    runs, _, _ = inputs.load_inputs([tmp_path])
    cons = compare.contrasts(runs)
    assert len(cons) == 1 and cons.iloc[0]["contrast"] == "LoRA r=8 (method.lr=0.001) − LoRA r=8 (method.lr=0.0005)"
    assert cons.iloc[0]["difference"] == pytest.approx(0.09)


def test_runs_that_did_not_learn_are_flagged(tmp_path: Path) -> None:
    runs = pd.DataFrame({"main_metric": ["accuracy", "accuracy", "matthews", "pearson_spearman", "accuracy", "accuracy"],
                         "eval/accuracy": [0.53, 0.70, None, None, 0.52, 0.6],
                         "eval/matthews": [None, None, 0.01, None, None, 0.3],
                         "main_metric_value": [0.53, 0.70, 0.01, 0.03, 0.52, 0.6],
                         "dev_majority_rate": [0.527, 0.527, None, None, None, None],
                         "dev_examples": [277, 277, None, None, None, None]})
    assert compare.not_learned(runs).tolist() == [True, False, True, True, pd.NA, False]
    write_run(tmp_path, "lora0", method="lora", seed=0, value=0.0, metric="matthews")
    write_run(tmp_path, "lora1", method="lora", seed=1, value=0.4, metric="matthews")
    loaded, _, _ = inputs.load_inputs([tmp_path])
    assert compare.compare(loaded)["not_learned"].tolist() == [1]


def test_wide_layout_paper_table(sweep: Path) -> None:
    runs, _, _ = inputs.load_inputs([sweep])
    w = compare.wide(compare.compare(runs))
    assert list(w.method) == ["full", "lora", "dora", "adalora"]
    assert w.attrs["tasks"] == ["sst2", "rte"] or set(w.attrs["tasks"]) == {"sst2", "rte"}
    dora = w[w.method == "dora"].iloc[0]
    assert dora["avg"] == pytest.approx((np.mean([0.92, 0.92, 0.93]) + np.mean([0.69, 0.70, 0.71])) / 2)
    ada = w[w.method == "adalora"].iloc[0]
    assert ada["trainable_params"] == PARAMS["adalora"] and ada["effective_params"] == 400_000
    md = render.table_text(runs)
    lines = md.splitlines()
    assert lines[0].startswith("| Method | Params trained / effective |") and "SST-2 (Acc ↑)" in lines[0]
    assert "RTE (Acc ↑)" in lines[0] and "Avg ↑" in lines[0]
    dora_line = next(line for line in lines if line.startswith("| DoRA r=8"))
    # best sst2 and rte; accuracy's interval is asymmetric inside [0, 1], so printed as [low, high]
    lo, hi = bounded_by_hand([0.92, 0.92, 0.93])
    assert f"**0.9233 [{lo:.4f}, {hi:.4f}]**" in dora_line and "**0.7000 [" in dora_line
    assert "AdaLoRA b=8 | 502K / 400K" in md
    assert "Student-t" in md and "Seeds per cell: 3" in md and "on the logit scale (Fisher z for [−1, 1])" in md


def test_average_needs_every_task(tmp_path: Path) -> None:
    write_run(tmp_path, "a", method="lora", task="sst2", value=0.9)
    write_run(tmp_path, "b", method="lora", task="rte", value=0.6)
    write_run(tmp_path, "c", method="dora", task="sst2", value=0.91)
    runs, _, _ = inputs.load_inputs([tmp_path])
    w = compare.wide(compare.compare(runs)).set_index("method")
    assert w.loc["lora", "avg"] == pytest.approx(0.75) and math.isnan(w.loc["dora", "avg"])


def test_formats(sweep: Path) -> None:
    runs, _, _ = inputs.load_inputs([sweep])
    tex = render.table_text(runs, fmt="latex")
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\textbf{" in tex and "[0.9077, 0.9365]" in tex
    assert "$\\uparrow$" in tex
    csv = render.table_text(runs, fmt="csv", layout="long")
    from io import StringIO

    every = pd.read_csv(StringIO(csv))
    back = every[every["row"] == "configuration"]
    assert len(back) == 8 and {"mean", "low", "high", "n", "higher_is_better", "best", "peak_memory_bytes",
                               "not_learned"} <= set(back.columns)
    assert back.groupby("task")["best"].sum().min() >= 1  # the best and every row that overlaps it, per task
    cons = every[every["row"] == "contrast"]
    assert len(cons) == 2 * (3 + 3)  # per task: 3 adapters vs full FT, 3 pairs of adapters at budget 8
    assert set(compare.CONTRAST_COLUMNS) <= set(every.columns)
    wide_csv = pd.read_csv(StringIO(render.table_text(runs, fmt="csv")))
    assert {"sst2", "sst2_low", "sst2_high", "sst2_n", "rte", "avg"} <= set(wide_csv.columns)
    long_md = render.table_text(runs, layout="long")
    header = long_md.splitlines()[0]
    for col in ("Task", "Method", "Metric", "Mean", "95% CI (t)", "Seeds", "Train s ↓", "Tokens/s ↑",
                "Peak memory ↓ (CPU max RSS)", "Params trained / effective ↓"):
        assert col in header
    assert "**Contrasts (Holm over the 12 contrasts of this table)**" in long_md and "| Holm TOST p |" in long_md
    pct = render.table_text(runs, scale=100.0, digits=2)
    assert "92.33 [90.77, 93.65]" in pct


def test_variants_split_configurations(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, f"a{seed}", method="lora", seed=seed, lr=1e-3, value=0.8)
        write_run(tmp_path, f"b{seed}", method="lora", seed=seed, lr=5e-4, value=0.7)
    runs, _, _ = inputs.load_inputs([tmp_path])
    long = compare.compare(runs)
    assert sorted(long["variant"]) == ["method.lr=0.0005", "method.lr=0.001"]
    assert set(long["n"]) == {2}
    assert "LoRA r=8 (method.lr=0.001)" in render.table_text(runs)


def test_a_run_read_twice_counts_once_and_two_runs_claiming_one_identity_are_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "s1", "a", seed=0, value=0.8)
    write_run(tmp_path / "s2", "a", seed=0, value=0.8)  # a copy of the same run
    assert json.loads((a / "run.json").read_text())["config_hash"]
    runs, _, _ = inputs.load_inputs([tmp_path / "s1", tmp_path / "s2"])
    long = compare.compare(runs)
    assert long.iloc[0]["n"] == 1 and long.iloc[0]["mean"] == pytest.approx(0.8)
    b = write_run(tmp_path / "s3", "a", seed=0, value=0.9)  # same configuration hash, other results
    with pytest.raises(compare.DuplicateRunError) as e:
        inputs.load_inputs([tmp_path / "s1", tmp_path / "s3"])
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert cli(["table", str(tmp_path / "s1"), str(tmp_path / "s3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "claim the same run" in err[0]


def test_directions() -> None:
    for name, m in METRICS.items():
        assert labels.higher_is_better(name) == m.higher_is_better
        assert labels.higher_is_better(f"eval/{name}") == m.higher_is_better
    assert labels.higher_is_better("pearson_spearman")
    for lower in ("eval/loss", "train_seconds", "peak_memory_bytes", "trainable_params", "forgetting"):
        assert not labels.higher_is_better(lower)
    assert labels.higher_is_better("tokens_per_s")


def test_pareto_front() -> None:
    x = [1, 2, 3, 4, 2]
    y = [0.5, 0.7, 0.6, 0.9, 0.7]
    assert compare.pareto_front(x, y).tolist() == [True, True, False, True, True]
    assert compare.pareto_front(x, y, y_higher=False).tolist() == [True, False, False, False, False]
    assert compare.pareto_front([1, float("nan")], [1, 2]).tolist() == [True, False]


def test_curves_mean_over_seeds(sweep: Path) -> None:
    runs, _, metrics = inputs.load_inputs([sweep])
    cur = compare.curves(runs, metrics)
    c = cur[(cur.method == "dora") & (cur.task == "rte")].set_index("step")
    assert list(c.index) == [10, 20] and set(c["n"]) == {3}
    assert c.loc[20, "mean"] == pytest.approx(0.70) and c.loc[10, "mean"] == pytest.approx(0.60)
    lo, hi = bounded_by_hand([0.69, 0.70, 0.71])
    assert c.loc[20, "low"] == pytest.approx(lo) and c.loc[20, "high"] == pytest.approx(hi)


def test_plots_return_axes(sweep: Path) -> None:
    import matplotlib.pyplot as plt

    from analysis.plots import compare as pc

    runs, _, metrics = inputs.load_inputs([sweep])
    long = compare.compare(runs)
    for x in ("trainable_params", "train_seconds", "peak_memory_bytes"):
        ax = pc.pareto(long, x=x, task="rte")
        assert ax.get_xscale() == ("log" if x == "trainable_params" else "linear")
        assert any(line.get_label() == "Pareto frontier" for line in ax.get_lines())
        assert len(ax.containers) == 4  # one error bar per configuration
        plt.close(ax.figure)
    ax = pc.learning_curves(compare.curves(runs, metrics), task="sst2")
    assert len(ax.get_lines()) == 4 and len(ax.collections) == 4  # mean lines and bands
    assert ax.get_xlabel() == "step"
    plt.close(ax.figure)
    _, given = plt.subplots()
    assert pc.pareto(long, task="sst2", ax=given) is given
    plt.close(given.figure)


def test_per_seed_values_behind_the_means(sweep: Path) -> None:
    """seed_values and curve_points are the values compare and curves average (figures draw them below 3 seeds)."""
    runs, _, metrics = inputs.load_inputs([sweep])
    long = compare.compare(runs).set_index(["task", "method"])
    seeds = compare.seed_values(runs)
    assert len(seeds) == 24 and set(seeds["seed"]) == {0, 1, 2}
    dora = seeds[(seeds["task"] == "rte") & (seeds["method"] == "dora")].sort_values("seed")
    assert dora["value"].tolist() == VALUES[("dora", 8)]["rte"] and dora["budget"].tolist() == [8, 8, 8]
    assert long.loc[("rte", "dora"), "mean"] == pytest.approx(dora["value"].mean())
    points = compare.curve_points(runs, metrics)
    assert len(points) == 24 * 2 and points["budget"].isna().sum() == 6 * 2  # full FT has no budget
    cur = compare.curves(runs, metrics).set_index(["task", "method", "step"])
    at20 = points[(points["task"] == "rte") & (points["method"] == "dora") & (points["step"] == 20)]
    assert cur.loc[("rte", "dora", 20), "mean"] == pytest.approx(at20["value"].mean())


def test_table_plots_draw_seeds_below_three(tmp_path: Path) -> None:
    """table --plots: with 2 seeds the curves and Pareto CSV files hold the per-seed values they draw."""
    for seed in (0, 1):
        write_run(tmp_path / "sweep", f"{seed}_lora_rte_s{seed}", task="rte", seed=seed, value=0.6 + 0.1 * seed)
    assert cli(["table", str(tmp_path / "sweep"), "--plots", str(tmp_path / "plots")]) == 0
    curves = pd.read_csv(tmp_path / "plots" / "curves_minilm_rte.csv")
    assert curves["seed"].notna().sum() == 4
    pareto = pd.read_csv(tmp_path / "plots" / "pareto_minilm_rte.csv")
    assert sorted(pareto.loc[pareto["seed"].notna(), "mean"].round(6)) == [0.6, 0.7]


# ------------------------------------------------------------------------------------------ CLI

def test_cli_table(sweep: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli(["table", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("| Method |") and "DoRA r=8" in out
    assert "left out 1 run(s)" in err and "24_lora_sst2_s9: status failed: boom" in err
    assert cli(["table", str(sweep), "--layout", "long", "--format", "latex", "--interval", "bootstrap"]) == 0
    out, _ = capsys.readouterr()
    assert "\\begin{table}" in out and "bootstrap" in out
    target = tmp_path / "t" / "table.csv"
    assert cli(["table", str(sweep), "--format", "csv", "-o", str(target), "--plots", str(tmp_path / "plots")]) == 0
    assert pd.read_csv(target).shape[0] == 4
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert "pareto_minilm_sst2.png" in names and "pareto_minilm_sst2.pdf" in names and "curves_minilm_rte.pdf" in names
    assert "pareto_minilm_sst2.csv" in names and "curves_minilm_rte.csv" in names


def test_cli_no_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, "x", status="failed")
    assert cli(["table", str(tmp_path)]) == 1
    assert cli(["table", str(tmp_path / "nope")]) == 2


# ------------------------------------------------------------------------------------------ W&B

class _FakeWandb(types.ModuleType):
    """Records what the table command logs."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.inits: list[dict[str, Any]] = []
        self.logged: list[dict[str, Any]] = []
        self.artifacts: list[Any] = []
        fake = self

        class Table:
            def __init__(self, dataframe: pd.DataFrame) -> None:
                self.dataframe = dataframe

        class Artifact:
            def __init__(self, name: str, type: str, description: str = "") -> None:  # noqa: A002
                self.name, self.type, self.entries = name, type, {}

            def add(self, obj: Any, name: str) -> None:
                self.entries[name] = obj

        class Run:
            dir = "/fake/run"

            def log(self, d: dict[str, Any]) -> None:
                fake.logged.append(d)

            def log_artifact(self, a: Any) -> None:
                fake.artifacts.append(a)

            def finish(self) -> None:
                pass

        self.teardown = lambda: None

        self.Table, self.Artifact, self._Run = Table, Artifact, Run

    def init(self, **kw: Any) -> Any:
        self.inits.append(kw)
        return self._Run()


def test_table_logged_to_wandb_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = make_sweep(tmp_path / "sweeps", failed=False, wandb=True)
    build_parser()  # import every subcommand module (and what they import) before wandb is faked
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert cli(["table", str(sweep)]) == 0  # off by default
    assert fake.inits == [] and not list(cwd.iterdir())
    assert cli(["table", str(sweep), "--wandb", "auto"]) == 0
    assert len(fake.inits) == 1
    init = fake.inits[0]
    assert init["group"] == "sweep" and init["job_type"] == "analysis" and init["mode"] == "offline"
    (out,) = cwd.iterdir()  # a new folder under the current directory, never the sweep
    assert Path(init["dir"]) == out and out.name.startswith("analysis-table-")
    assert set(fake.logged[0]) == {"comparison/long", "comparison/wide"}
    art = fake.artifacts[0]
    assert art.type == "comparison-table" and art.name == "comparison-sweep"
    long = art.entries["comparison_long"].dataframe
    assert len(long) == 8 and {"mean", "low", "high", "n"} <= set(long.columns)
    # --wandb auto: untracked sweeps log nothing
    fake.inits.clear()
    plain = make_sweep(tmp_path / "plain", failed=False)
    assert cli(["table", str(plain), "--wandb", "auto"]) == 0
    assert fake.inits == []


def test_table_logged_to_real_offline_wandb(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    sweep = make_sweep(tmp_path / "sweeps", failed=False, wandb=True)
    assert cli(["table", str(sweep), "--wandb", "on", "--plots", str(tmp_path / "out")]) == 0
    assert not list(sweep.rglob("wandb"))
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].glob("files/media/table/comparison/long_*.table.json"))
    assert tables, "the comparison table was not written"
    data = json.loads(tables[0].read_text())
    assert "mean" in data["columns"] and len(data["data"]) == 8
    raw = next(runs[0].glob("*.wandb")).read_bytes()
    assert b"comparison-table" in raw and b"sweep" in raw


@pytest.mark.parametrize(("args", "option"), [
    (["--confidence", "1.5"], "--confidence"), (["--confidence", "0"], "--confidence"),
    (["--confidence", "nan"], "--confidence"), (["--metric", "acuracy"], "--metric"), (["--digits", "-1"], "--digits"),
    (["--margin", "0"], "--margin"), (["--margin", "nan"], "--margin"),
])
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], option: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, "a", method="lora", seed=0)
    assert cli(["table", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option}"), err


def test_unchosen_selection_candidates_are_not_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `compare` sweep: stage-1 runs at the lr values not chosen on validation are left out (and listed)."""
    sweep = tmp_path / "compare"
    cands = {lr: write_run(sweep, f"s1_{lr:g}", method="lora", seed=0, lr=lr, value=v)
             for lr, v in ((5e-4, 0.80), (1e-3, 0.85), (2e-3, 0.60))}
    chosen = [cands[1e-3]] + [write_run(sweep, f"s2_{s}", method="lora", seed=s, lr=1e-3, value=0.84 + s / 100)
                              for s in (1, 2)]
    h = {d: json.loads((d / "run.json").read_text())["config_hash"] for d in [*cands.values(), *chosen]}
    (sweep / "selection.json").write_text(json.dumps({"key": "train.lr_scale", "points": [{
        "point": "task=sst2 method=lora budget=8", "chosen": 2.0,
        "candidates": [{"value": v, "config_hash": h[d], "run_dir": str(d)} for v, d in zip((1.0, 2.0, 4.0), cands.values())],
        "stage2": [{"config_hash": h[d], "run_dir": str(d)} for d in chosen]}]}))
    runs, skipped, _ = inputs.load_inputs([sweep])
    assert sorted(runs["seed"]) == [0, 1, 2] and set(runs["run_dir"]) == {str(d.resolve()) for d in chosen}
    assert sum("selection candidate not chosen" in why for _, why in skipped) == 2
    long = compare.compare(runs)
    assert len(long) == 1 and long.iloc[0]["n"] == 3 and long.iloc[0]["variant"] == ""


def test_claim_decisions_are_holm_adjusted_in_the_claims_family(tmp_path: Path) -> None:
    """DoRA − LoRA alone is 'equivalent' at ±0.01 (TOST p ≈ 0.04); in a family of 4 claims × 2 hypotheses its
    Holm TOST p is above 5%, so the claim line's decision is undetermined, as the contrasts table says."""
    from analysis.inputs import load_inputs

    for task in ("sst2", "rte"):
        for seed, (lo, do) in enumerate([(0.8000, 0.7990), (0.8100, 0.8160), (0.7900, 0.7860)]):
            write_run(tmp_path / "s", f"{task}l{seed}", task=task, method="lora", seed=seed, value=lo)
            write_run(tmp_path / "s", f"{task}d{seed}", task=task, method="dora", seed=seed, value=do)
            write_run(tmp_path / "s", f"{task}a{seed}", task=task, method="adalora", seed=seed, value=lo - 0.02 * seed)
    runs, _, _ = load_inputs([tmp_path / "s"])
    v = compare.verdicts(runs)
    assert len(v) == 4
    assert (v["p_equiv_holm"] >= v["p_equiv"]).all()
    assert ((v["decision"] == "equivalent") == (v["p_equiv_holm"] < 0.05)).all()
    assert (v.loc[v["p_equiv"] < 0.05, "decision"] == "undetermined").any()


def test_table_of_a_sequential_sweep_uses_its_boundary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs of a sweep with sequential.json: the long table's contrasts are the sequential ones (repeated p's,
    the printed interval), equal to analysis.sequential.decide at the boundary of the recorded looks; the same
    runs without the record give the fixed-sample contrast."""
    from analysis import sequential

    full, lora = [0.90, 0.91, 0.89, 0.92], [0.88, 0.90, 0.86, 0.90]
    sweep = tmp_path / "sweep"
    for s in range(4):
        write_run(sweep, f"full_s{s}", method="full", budget=None, seed=s, value=full[s])
        write_run(sweep, f"lora_s{s}", method="lora", seed=s, value=lora[s])
    out = tmp_path / "fixed.csv"
    assert cli(["table", str(sweep), "--layout", "long", "--format", "csv", "-o", str(out)]) == 0
    fixed = pd.read_csv(out).query("row == 'contrast'").iloc[0]
    (sweep / "sequential.json").write_text(json.dumps({"looks": [2, 4], "batch": 2, "max_seeds": 4, "done": []}))
    out = tmp_path / "seq.csv"
    assert cli(["table", str(sweep), "--layout", "long", "--format", "csv", "-o", str(out)]) == 0
    assert "sequential sweep (looks at 2, 4 seeds)" in capsys.readouterr().err
    seq = pd.read_csv(out).query("row == 'contrast'").iloc[0]
    d = sequential.decide(lora, full, bound=sequential.boundary((2, 4)), margin=0.01, paired=True)
    assert (seq["difference"], seq["low"], seq["high"], seq["p"]) == pytest.approx((d.estimate, d.low, d.high, d.p))
    assert seq["p"] > fixed["p"] and seq["high"] - seq["low"] > fixed["high"] - fixed["low"]
    (tmp_path / "other").mkdir()
    for s in range(2):
        write_run(tmp_path / "other", f"dora_s{s}", method="dora", seed=s, value=0.9)
    (tmp_path / "other" / "sequential.json").write_text(json.dumps({"looks": [2, 6]}))
    assert cli(["table", str(sweep), str(tmp_path / "other"), "--layout", "long"]) == 2
    assert "different looks" in capsys.readouterr().err
