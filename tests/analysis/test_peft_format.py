"""PEFT method_comparison result files: read into the comparison tables, and harness runs written as such files."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis import compare, inputs, peft_format, render
from analysis.__main__ import main as cli
from tests.analysis.test_compare import make_sweep, write_run

PEFT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "peft-method-comparison"
needs_data = pytest.mark.skipif(not PEFT_DIR.is_dir(), reason=f"{PEFT_DIR} not present")


def _raw(name: str) -> dict[str, Any]:
    return json.loads((PEFT_DIR / name).read_text())


@pytest.fixture(scope="module")
def peft_runs() -> pd.DataFrame:
    runs, skipped, _ = inputs.load_inputs([PEFT_DIR])
    assert skipped == []
    return runs


@needs_data
def test_every_file_is_read(peft_runs: pd.DataFrame) -> None:
    assert len(peft_runs) == len(list(PEFT_DIR.glob("*.json"))) == 63
    assert set(peft_runs["source"]) == {"peft"} and set(peft_runs["task"]) == {"metamathqa"}
    assert (peft_runs["status"] == "done").all()


@needs_data
@pytest.mark.parametrize("file, method, budget, variant, acc", [
    ("lora--llama-3.2-3B-rank32.json", "lora", 32, "", 0.4784),
    ("lora--llama-3.2-3B-rank32-dora.json", "dora", 32, "", 0.4693),
    ("full-finetuning--llama-3.2-3B-lr_0.00001.json", "full", None, "lr_0.00001", 0.4716),
    ("adalora--llama-3.2-3B-rank32.json", "adalora", 32, "", 0.3730),
    ("lora--llama-3.2-3B-rank64-rslora.json", "lora", 64, "rslora", 0.5133),
])
def test_table_reproduces_the_files(peft_runs: pd.DataFrame, file: str, method: str, budget: Any,
                                    variant: str, acc: float) -> None:
    raw = _raw(file)
    ti = raw["train_info"]
    long = compare.compare(peft_runs)
    sel = (long.method == method) & (long.variant == variant)
    sel &= long.budget.isna() if budget is None else (long.budget == budget)
    assert sel.sum() == 1
    row = long[sel].iloc[0]
    assert round(row["mean"], 4) == acc
    assert row["mean"] == ti["metrics"][-1]["test accuracy"]
    assert row["train_seconds"] == ti["train_time"]
    assert row["peak_memory_bytes"] == ti["accelerator_memory_max"]
    assert row["trainable_params"] == ti["num_trainable_params"]
    assert row["n"] == 1 and math.isnan(row["low"])
    assert row["model"] == "meta-llama/Llama-3.2-3B" and row["metric"] == "accuracy"


@needs_data
def test_formatted_tables_show_the_numbers(peft_runs: pd.DataFrame) -> None:
    core = peft_runs[peft_runs.method.isin(["full", "lora", "dora", "adalora"])]
    md = render.table_text(core)
    assert "| LoRA r=32 | 9.18M / 9.18M | 0.4784 |" in md
    assert "| DoRA r=32 | 9.29M / 9.29M | 0.4693 |" in md
    assert "| Full FT (lr_0.00001) | 3.21B / 3.21B | 0.4716 |" in md
    assert "| AdaLoRA b=32 | 18.4M / – | 0.3730 |" in md  # final ranks known, matrix shapes not: no effective count
    long = render.table_text(core, layout="long")
    lora = next(line for line in long.splitlines() if "| LoRA r=32 |" in line)
    assert "| **942.0** |" in lora and "| 20.8 GiB |" in lora  # train_time 941.96 s (fastest), 22292725760 B
    csv = pd.read_csv(pd.io.common.StringIO(render.table_text(core, fmt="csv", layout="long")))
    full = csv[csv.method == "full"].iloc[0]
    assert full["train_seconds"] == _raw("full-finetuning--llama-3.2-3B-lr_0.00001.json")["train_info"]["train_time"]
    assert full["peak_memory_bytes"] == 38868615168


@needs_data
def test_cli_table_and_pareto_on_peft_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    files = [str(PEFT_DIR / f) for f in ("lora--llama-3.2-3B-rank32.json", "lora--llama-3.2-3B-rank32-dora.json",
                                         "full-finetuning--llama-3.2-3B-lr_0.00001.json")]
    assert cli(["table", *files, "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MetaMathQA (Acc ↑)" in out and "0.4784" in out and "0.4693" in out
    assert "**" not in out.split("\n\n")[0] and "one seed per cell: descriptive" in out  # single runs: no winner
    assert (tmp_path / "pareto_meta-llama-Llama-3.2-3B_metamathqa.png").is_file()


@needs_data
def test_learning_curves_from_peft_files() -> None:
    m = peft_format.load_peft_metrics(PEFT_DIR / "lora--llama-3.2-3B-rank32.json")
    valid = m.dropna(subset=["eval/accuracy"])
    assert len(valid) == 20 and valid["step"].iloc[0] == 250
    assert m["test/accuracy"].dropna().iloc[0] == pytest.approx(0.4783927217589083)
    assert {"train/loss", "perf/tokens_per_s"} <= set(m.columns)


@needs_data
def test_failed_and_repeated_results(tmp_path: Path) -> None:
    src = _raw("lora--llama-3.2-3B-rank32.json")
    failed = json.loads(json.dumps(src))
    failed["train_info"]["status"] = "failed"
    failed["run_info"]["error_msg"] = "CUDA out of memory"
    failed["run_info"]["experiment_name"] = "lora/llama-3.2-3B-rank8"
    (tmp_path / "failed.json").write_text(json.dumps(failed))
    older = json.loads(json.dumps(src))
    older["run_info"]["created_at"] = "2020-01-01T00:00:00+00:00"
    older["train_info"]["metrics"][-1]["test accuracy"] = 0.1
    (tmp_path / "older.json").write_text(json.dumps(older))
    shutil.copy(PEFT_DIR / "lora--llama-3.2-3B-rank32.json", tmp_path / "newer.json")
    runs = peft_format.load_peft_results([tmp_path])
    assert [(p.name, why) for p, why in runs.skipped] == [("failed.json", "status failed: CUDA out of memory")]
    assert len(runs.table) == 1 and runs.table.iloc[0]["eval/accuracy"] == pytest.approx(0.4783927217589083)


def test_mapping_of_peft_configs() -> None:
    assert peft_format.method_of(None) == "full"
    assert peft_format.method_of({"peft_type": "LORA", "use_dora": True, "r": 16}) == "dora"
    assert peft_format.method_of({"peft_type": "ADALORA", "r": 8, "target_r": 32}) == "adalora"
    assert peft_format.budget_of({"peft_type": "ADALORA", "r": 8, "target_r": 32}) == 32
    assert peft_format.budget_of({"peft_type": "IA3"}) is None
    assert peft_format.variant_of("lora/llama-3.2-3B-rank32-lorafa", "meta-llama/Llama-3.2-3B", "lora", 32) == "lorafa"


# ------------------------------------------------------------------------------------------ writing

def _dashboard_row(data: dict[str, Any]) -> dict[str, Any]:
    """The fields PEFT's dashboard (method_comparison/processing.py, MetaMathQA task) reads from a file."""
    ri, ti, mi = data["run_info"], data["train_info"], data["meta_info"]
    last = ti["metrics"][-1]
    return {
        "experiment_name": ri["experiment_name"], "model_id": ri["train_config"]["model_id"],
        "peft_type": ri["peft_config"]["peft_type"] if ri["peft_config"] else "full-finetuning",
        "accelerator_memory_reserved_avg": int(ti["accelerator_memory_reserved_avg"]),
        "accelerator_memory_max": int(ti["accelerator_memory_max"]),
        "accelerator_memory_reserved_99th": int(ti["accelerator_memory_reserved_99th"]),
        "total_time": float(ri["total_time"]), "train_time": float(ti["train_time"]),
        "file_size": int(ti["file_size"]), "num_trainable_params": int(ti["num_trainable_params"]),
        "train_loss": float(last["train loss"]), "train_samples": int(last["train samples"]),
        "test_accuracy": float(last["test accuracy"]), "train_total_tokens": int(last["train total tokens"]),
        "peft_version": mi["package_info"]["peft-version"], "peft_branch": ri["peft_branch"],
        "transformers_version": mi["package_info"]["transformers-version"],
        "datasets_version": mi["package_info"]["datasets-version"], "torch_version": mi["package_info"]["torch-version"],
        "bitsandbytes_version": mi["package_info"]["bitsandbytes-version"], "created_at": pd.to_datetime(ri["created_at"]),
        "status": ti["status"],
    }


def test_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep(tmp_path)  # 24 done + 1 failed
    adapter = sweep / "6_lora_sst2_s0" / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                             "use_dora": False, "target_modules": ["query", "value"]}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 1234)
    out = tmp_path / "peft"
    assert cli(["export-peft", str(sweep), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "24 file(s)" in printed and "1 file(s)" in printed
    ok = sorted((out / "results").glob("*.json"))
    bad = sorted((out / "cancelled_results").glob("*.json"))
    assert len(ok) == 24 and len(bad) == 1
    assert json.loads(bad[0].read_text())["train_info"]["status"] == "failed"

    data = json.loads((out / "results").joinpath(next(p.name for p in ok if p.name.startswith("lora--minilm-sst2-rank8-seed0"))).read_text())
    row = _dashboard_row(data)  # everything PEFT's dashboard needs is there and typed
    assert row["peft_type"] == "LORA" and row["test_accuracy"] == pytest.approx(0.90) and row["file_size"] == 1234
    assert row["train_total_tokens"] == 20_000 and row["train_samples"] == 20 * 32
    assert data["train_info"]["metrics"][0]["valid accuracy"] == pytest.approx(0.80)
    assert data["harness_info"]["main_metric"] == "accuracy"
    full = json.loads(next(p for p in ok if p.name.startswith("full--")).read_text())
    assert full["run_info"]["peft_config"] is None and _dashboard_row(full)["peft_type"] == "full-finetuning"

    # the exported files give the same table as the run folders
    back = peft_format.load_peft_results([out / "results"], task="ignored")
    assert back.skipped == [] and len(back.table) == 24
    assert set(back.table["task"]) == {"sst2", "rte"} and set(back.table["variant"]) == {""}
    harness, _, _ = inputs.load_inputs([sweep])
    a = compare.compare(harness).set_index(["task", "method"])
    b = compare.compare(back.table).set_index(["task", "method"])
    assert len(b) == 8
    for col in ("mean", "low", "high", "n", "train_seconds", "peak_memory_bytes", "trainable_params",
                "effective_params", "budget", "peak_memory_kind"):
        pd.testing.assert_series_equal(a[col].sort_index(), b[col].sort_index(), check_names=False, check_dtype=False)

    # one run, one count: the sweep and its own exports together give the same n and intervals as the sweep
    both, _, _ = inputs.load_inputs([sweep, out / "results"])
    assert len(both) == 24
    c = compare.compare(both).set_index(["task", "method"])
    for col in ("mean", "low", "high", "n"):
        pd.testing.assert_series_equal(a[col].sort_index(), c[col].sort_index(), check_names=False, check_dtype=False)
    assert cli(["table", str(sweep), str(out / "results"), "--layout", "long", "--format", "csv"]) == 0
    capsys.readouterr()
    assert cli(["table", str(sweep), "--layout", "long", "--format", "csv"]) == 0
    alone = capsys.readouterr().out
    assert cli(["table", str(sweep), str(out / "results"), "--layout", "long", "--format", "csv"]) == 0
    together = pd.read_csv(io.StringIO(capsys.readouterr().out)).drop(columns=["source"], errors="ignore")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(alone))[["task", "method", "mean", "low", "high", "n"]],
                                  together[["task", "method", "mean", "low", "high", "n"]])


@pytest.mark.slow
def test_export_real_run(tmp_path: Path) -> None:
    """A real tiny run → PEFT file → the dashboard's fields; read back by the table."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    glue = root / ".." / "shared" / "data" / "glue"
    if not glue.is_dir():
        pytest.skip("GLUE data not present")
    run_dir = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "harness", "model=tiny_bert", "method=lora", "tracking=none",
                    "train.max_steps=4", "train.eval_every=2", "train.batch_size=8", "task.max_eval_samples=32",
                    "train.progress=false", f"hydra.run.dir={run_dir}"], cwd=root, check=True,
                   env={**os.environ, "GLUE_DIR": str(glue)}, capture_output=True)
    res = peft_format.peft_result(run_dir)
    row = _dashboard_row(res)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert row["test_accuracy"] == summary["eval/accuracy"] and row["num_trainable_params"] == summary["trainable_params"]
    assert row["file_size"] > 0 and res["run_info"]["peft_config"]["peft_type"] == "LORA"
    assert res["train_info"]["status"] == "success"


def test_unfinished_run_exports_as_cancelled(tmp_path: Path) -> None:
    d = write_run(tmp_path, "r", status="running")  # host "elsewhere": stays running → cancelled
    res = peft_format.peft_result(d)
    assert res["train_info"]["status"] == "canceled" and peft_format.result_subdir(res) == "cancelled_results"
    assert peft_format.result_filename(res).startswith("lora--minilm-sst2-rank8-seed0--")


def test_export_carries_the_recorded_budget(tmp_path: Path) -> None:
    """A parameter-matched AdaLoRA run (init_r = budget = 8, target_r = 5) exports and reads back at budget 8,
    the record's, not PEFT's target_r; a record from before the budget was recorded exports as it did."""
    d = write_run(tmp_path, "new", method="adalora", budget=5)
    rec = json.loads((d / "run.json").read_text())
    rec["config"]["method"].update(init_r=8, match="params")
    (d / "run.json").write_text(json.dumps({**rec, "budget": 8}))
    data = peft_format.peft_result(d)
    assert data["harness_info"]["budget"] == 8 and "-rank8-" in data["run_info"]["experiment_name"]
    row = peft_format.result_row(data)
    assert row["budget"] == 8 and row["variant"] == ""
    old = peft_format.peft_result(write_run(tmp_path, "old", method="adalora", budget=4))
    assert "-rank4-" in old["run_info"]["experiment_name"] and peft_format.result_row(old)["budget"] == 4


@needs_data
def test_decoder_runs_export_for_peft_viewer_and_read_back(tiny_decoder_runs: Path, tmp_path: Path) -> None:
    """Real causal-LM runs → PEFT files that hold what PEFT's viewer reads (test accuracy = the final exact match,
    forgetting = the text-sample loss increase, memory, time, tokens and tokens/s), shaped as PEFT's own files; read
    back, the runs frame has the run folders' numbers, and the forgetting figure the same summary."""
    real = _raw("adalora--llama-3.2-3B-rank32.json")
    out = tmp_path / "peft"
    assert cli(["export-peft", str(tiny_decoder_runs), "-o", str(out)]) == 0
    files = sorted((out / "results").glob("*.json"))
    assert len(files) == 2
    harness, _, _ = inputs.load_inputs([tiny_decoder_runs])
    back = peft_format.load_peft_results([out / "results"], task="ignored").table
    for f in files:
        data = json.loads(f.read_text())
        summary = json.loads((Path(data["harness_info"]["run_dir"]) / "summary.json").read_text())
        for part in ("run_info", "train_info", "meta_info"):
            assert set(real[part]) <= set(data[part]) | {"num_total_params"}, part
        last = data["train_info"]["metrics"][-1]
        assert set(real["train_info"]["metrics"][-1]) <= set(last)
        row = _dashboard_row(data)
        assert row["test_accuracy"] == summary["eval/exact_match"] and last["test exact_match"] == row["test_accuracy"]
        assert last["forgetting"] == summary["forget/text/loss/change"]
        assert row["accelerator_memory_max"] == summary["peak_memory_bytes"]
        assert row["train_time"] == summary["train_seconds"] and row["train_total_tokens"] == summary["tokens"]
        steps = data["train_info"]["metrics"][:-1]
        assert [m["step"] for m in steps] == [0, 2, 4] and all("valid accuracy" in m for m in steps)
        assert all(m["tokens / sec"] > 0 for m in steps[1:])
        # read back: the same numbers as the run folder
        mine = back[back["experiment_name"] == data["run_info"]["experiment_name"]].iloc[0]
        folder = harness[harness["run_dir"] == data["harness_info"]["run_dir"]].iloc[0]
        assert mine["main_metric"] == "exact_match" and "eval/accuracy" not in back
        for col in ("eval/exact_match", "base/exact_match", "forget/text/loss/change",
                    "forget/leg_counting/exact_match/change", "peak_memory_bytes", "train_seconds", "tokens_per_s",
                    "eval_generated_tokens_per_s"):
            assert mine[col] == pytest.approx(folder[col]), col
    figs = []
    for k, src in enumerate((tiny_decoder_runs, out / "results")):
        assert cli(["figures", "forgetting", str(src), "-o", str(tmp_path / f"fig{k}")]) == 0
        figs.append(pd.read_csv(tmp_path / f"fig{k}" / "forgetting_summary.csv"))
    cols = ["method", "measure", "n", "learned_mean", "forgetting_mean", "base", "final"]
    pd.testing.assert_frame_equal(figs[0][cols], figs[1][cols])


@needs_data
def test_peft_forgetting_is_read_from_its_files(peft_runs: pd.DataFrame) -> None:
    raw = _raw("adalora--llama-3.2-3B-rank32.json")["train_info"]["metrics"][-1]["forgetting"]
    row = peft_runs[peft_runs["experiment_name"] == "adalora/llama-3.2-3B-rank32"].iloc[0]
    assert row[peft_format.FORGETTING_KEY] == raw
