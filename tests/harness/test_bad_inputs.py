"""The bad-input catalogue: every case exits with status 2 and one ``error:`` line naming the key or file and
the fix, prints no traceback, and leaves no run folder that looks done.

Cases run the CLI in process (``harness.__main__.main``, ~0.3 s each); a few go through a real subprocess to
prove that nothing reaches the terminal but the one line. Cases already in test_cli.py are not repeated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.__main__ import main
from tests.conftest import GLUE, ROOT

BASE = ["model=tiny_bert", "tracking=none", "train.max_steps=4", "task.max_train_samples=32",
        "task.max_eval_samples=16", "train.progress=false"]


def write_files(d: Path) -> None:
    """The bad data files of the catalogue (and a good one to pair them with)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "ok.csv").write_text("text,label\nhello,0\nworld,1\n")
    (d / "wrong_columns.csv").write_text("sentence,label\nhello,0\nworld,1\n")
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("text,label\n")
    (d / "dev_label_5.csv").write_text("text,label\nhello,0\nworld,5\n")
    (d / "latin1.csv").write_bytes("text,label\nh\xe9llo,0\nworld,1\n".encode("latin-1"))
    (d / "one_label.csv").write_text("text,label\nhello,0\nworld,0\n")
    (d / "data.txt").write_text("text\tlabel\nhi\t1\n")
    (d / "torn.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", \n')
    (d / "words.csv").write_text("text,label\nhello,high\nworld,low\n")
    (d / "label_empty.csv").write_text("text,label\nhello,0\nworld,1\nfoo,\n")
    (d / "label_nan.csv").write_text("text,label\nhello,0\nworld,1\nfoo,nan\n")
    (d / "label_short_row.csv").write_text("text,label\nhello,0\nworld,1\nfoo\n")
    (d / "text_empty.csv").write_text("text,label\nhello,0\n,1\n")
    (d / "dev_label_word.csv").write_text("text,label\nhello,0\nworld,maybe\n")
    (d / "label_null.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n'
                                        '{"text": "c", "label": null}\n')
    (d / "label_bool.jsonl").write_text('{"text": "a", "label": true}\n{"text": "b", "label": false}\n')
    (d / "text_null.jsonl").write_text('{"text": "a", "label": 0}\n{"text": null, "label": 1}\n')
    (d / "text_bool.jsonl").write_text('{"text": true, "label": 0}\n{"text": "b", "label": 1}\n')
    (d / "text_missing.jsonl").write_text('{"text": "a", "label": 0}\n{"label": 1}\n')
    (d / "reg_nan.csv").write_text("text,label\na,0.5\nb,nan\n")
    (d / "reg_inf.csv").write_text("text,label\na,0.5\nb,-inf\n")
    (d / "reg_empty.csv").write_text("text,label\na,0.5\nb,\n")
    for name, train, dev in (("glue_no_dev", None, False), ("glue_label_2", "sentence\tlabel\nok\t1\nbad\t2\n", True),
                             ("glue_columns", "text\tlabel\nok\t1\n", True)):
        sst = d / name / "SST-2"
        sst.mkdir(parents=True, exist_ok=True)
        (sst / "train.tsv").write_text(train or (GLUE / "SST-2" / "train.tsv").read_text())
        if dev:
            (sst / "dev.tsv").write_text(train or "")


@dataclass(frozen=True)
class Case:
    """One bad input: the arguments (``{d}`` = the folder of bad files), what the line must name, the fix."""

    id: str
    args: tuple[str, ...]
    names: str  # the key, option or file the error line names
    fix: str  # a piece of the fix the error line gives
    cpu_only: bool = False  # only meaningful where torch has no CUDA


def custom(train: str, dev: str = "ok.csv", *more: str) -> tuple[str, ...]:
    return ("task=custom", f"task.train_file={{d}}/{train}", f"task.dev_file={{d}}/{dev}", *more)


CASES = [
    # -- configuration values
    Case("max_steps_zero", ("train.max_steps=0",), "train.max_steps", "must be > 0"),
    Case("warmup_above_1", ("train.warmup_ratio=1.5",), "train.warmup_ratio", "[0, 1)"),
    Case("device_unknown", ("train.device=tpu",), "train.device", "auto, cpu or cuda"),
    Case("grad_accum_zero", ("train.grad_accum=0",), "train.grad_accum", "positive integer"),
    Case("checkpoint_every_negative", ("train.checkpoint_every=-1",), "train.checkpoint_every", "0 = no checkpoints"),
    Case("compile_unknown", ("train.compile=yes",), "train.compile", "auto, none, graphs, layers, model"),
    Case("graphs_on_cpu", ("train.compile=graphs", "train.device=cpu"), "train.compile=graphs", "train.compile=auto or none"),
    Case("compile_mode_unknown", ("train.compile=model", "train.compile_mode=fast"), "train.compile_mode", "reduce-overhead"),
    Case("pad_multiple_negative", ("train.pad_to_multiple=-8",), "train.pad_to_multiple", "0 = pad to the longest"),
    Case("checkpoint_minutes_negative", ("train.checkpoint_minutes=-1",), "train.checkpoint_minutes",
         "0 = no timed checkpoints"),
    Case("resume_unknown", ("train.resume=maybe",), "train.resume", "auto or never"),
    Case("force_not_bool", ("train.force=maybe",), "train.force", "not a valid bool"),
    Case("tracking_mode_unknown", ("tracking.mode=bogus",), "tracking.mode", "offline, online or disabled"),
    Case("wandb_timeout_zero", ("tracking.init_timeout=0",), "tracking.init_timeout", "must be > 0"),
    Case("snapshot_schedule_unknown", ("snapshot.schedule=weekly",), "snapshot.schedule", "'every'"),
    Case("snapshot_step_zero", ("snapshot.steps=[0]",), "snapshot.steps", "count from 1"),
    Case("snapshot_type_unknown", ("snapshot.types=[Wz]",), "snapshot.types", "keep none"),
    Case("train_samples_zero", ("task.max_train_samples=0",), "task.max_train_samples", "must be > 0"),
    Case("max_length_zero", ("model.max_length=0",), "model.max_length", "must be > 0"),
    Case("budget_zero", ("budget=0",), "budget", "positive integer"),
    Case("budget_not_a_number", ("budget=abc",), "budget", "positive integer"),
    Case("seed_float", ("seed=1.5",), "seed", "must be an integer"),
    Case("dropout_above_1", ("method.dropout=1.5",), "method.dropout", "[0, 1)"),
    Case("adalora_budget_above_initial", ("method=adalora", "method.init_r=12", "method.target_r=20"),
         "method.target_r", "set init_r >= target_r"),
    Case("adalora_budget_equals_initial", ("method=adalora", "method.init_r=6", "method.target_r=6"),
         "method.init_r", "set init_r > target_r"),
    Case("adalora_beta_1", ("method=adalora", "method.beta1=1.0"), "method.beta1", "(0, 1)"),
    Case("adalora_deltaT_zero", ("method=adalora", "method.deltaT=0"), "method.deltaT", "positive integer"),
    Case("layer_out_of_range", ("method.layers=[99]",), "method.layers", "layers 0..1"),
    Case("dora_keep_base_output_unmatched", ("method=dora", "method.keep_base_output=[Wx]"), "method.keep_base_output",
         "use matrix types"),
    Case("unknown_top_level_key", ("+foo=1",), "foo", "known keys are"),
    Case("unknown_group_option", ("task=nosuchtask",), "task=nosuchtask", "choose one of: cola"),
    Case("unknown_task_name", ("task.name=mnli",), "task.name", "GLUE tasks"),
    Case("model_path_missing", ("model=hf", "model.name=/nonexistent/model"), "model.name",
         "a local folder with config.json"),
    Case("unknown_launcher", ("hydra/launcher=nosuch",), "hydra/launcher=nosuch", "choose one of: basic"),
    Case("override_syntax", ("train.lr=[1,",), "train.lr=[1,", "write key=value"),
    # -- command-line words
    Case("group_name_as_word", ("method", "lora"), "'method'", "write method=<option>"),
    Case("preset_typo", ("sweeps",), "'sweeps'", "did you mean sweep?"),
    Case("unknown_flag", ("--bogus",), "--bogus", "--help lists the flags"),
    Case("two_modes", ("-m", "method=lora,dora", "--cfg", "job"), "--multirun and --cfg", "one of them at a time"),
    Case("one_bad_job_in_a_grid", ("-m", "train.lr=1e-3,-1"), "train.lr", "[sweep job:"),
    # -- data files
    Case("custom_without_files", ("task=custom",), "task.train_file", "needs both"),
    Case("wrong_columns", custom("wrong_columns.csv"), "wrong_columns.csv", "set task.text_columns"),
    Case("missing_text_column", custom("ok.csv", "ok.csv", "task.text_columns=[text,other]"), "ok.csv",
         "missing column(s) ['other']"),
    Case("empty_file", custom("empty.csv"), "empty.csv", "needs a header line and data rows"),
    Case("header_only", custom("header_only.csv"), "header_only.csv", "no data rows"),
    Case("dev_label_out_of_range", custom("ok.csv", "dev_label_5.csv"), "dev_label_5.csv", "fix the file"),
    Case("not_utf8", custom("latin1.csv"), "latin1.csv", "re-encode the file as UTF-8"),
    Case("single_label", custom("one_label.csv", "one_label.csv"), "one_label.csv", "two or more"),
    Case("unknown_extension", custom("data.txt"), "data.txt", "use .csv, .tsv or .jsonl"),
    Case("torn_jsonl", custom("torn.jsonl"), "torn.jsonl", "each line must be one JSON object"),
    Case("regression_words", custom("words.csv", "words.csv", "task.problem=regression"), "words.csv",
         "must be numeric"),
    Case("dev_file_missing", custom("ok.csv", "nope.csv"), "nope.csv", "existing CSV or JSONL"),
    Case("glue_without_dev_split", ("task.glue_dir={d}/glue_no_dev",), "SST-2/dev.tsv", "must hold"),
    Case("glue_label_out_of_range", ("task.glue_dir={d}/glue_label_2",), "SST-2/train.tsv", "outside ['0', '1']"),
    Case("glue_wrong_columns", ("task.glue_dir={d}/glue_columns",), "SST-2/train.tsv", "set task.text_columns"),
    # -- NaN and inf where a finite number is meant (issue 15, item 3)
    *(Case(f"{key.replace('.', '_')}_{v.strip('-')}", (*pre, f"{key}={v}"), key, "must be a finite number")
      for key, v, pre in (("train.lr", "nan", ()), ("train.lr", "inf", ()),
                          ("train.epochs", "nan", ("train.max_steps=null",)), ("train.weight_decay", "inf", ()),
                          ("train.warmup_ratio", "nan", ()), ("train.max_grad_norm", "nan", ()),
                          ("train.lr_scale", "-inf", ()), ("train.checkpoint_minutes", "inf", ()),
                          ("method.alpha", "nan", ()), ("method.lr", "nan", ()),
                          ("method.dropout", "nan", ()), ("method.tinit", "inf", ("method=adalora",)),
                          ("method.orth_reg_weight", "nan", ("method=adalora",)),
                          ("method.beta2", "nan", ("method=adalora",)), ("task.validation_fraction", "nan", ()),
                          ("tracking.init_timeout", "inf", ()))),
    # -- seeds, devices, the model
    Case("seed_negative", ("seed=-1",), "seed", "0..4294967295"),
    Case("seed_huge", ("seed=4294967296",), "seed", "0..4294967295"),
    Case("split_seed_negative", ("task.split_seed=-1",), "task.split_seed", "0..4294967295"),
    Case("device_gpu", ("train.device=gpu",), "train.device", "auto, cpu or cuda[:N]"),
    Case("device_cuda_x", ("train.device=cuda:x",), "train.device", "auto, cpu or cuda[:N]"),
    Case("device_cuda_negative", ("train.device=cuda:-1",), "train.device", "auto, cpu or cuda[:N]"),
    Case("device_cuda_99", ("train.device=cuda:99",), "train.device", "train.device=cpu or auto"),
    Case("device_cuda_without_cuda", ("train.device=cuda",), "train.device", "train.device=cpu or auto", cpu_only=True),
    Case("device_mps_unavailable", ("train.device=mps",), "train.device", "use cpu or auto"),
    Case("model_hf_without_name", ("model=hf",), "model.name: required with model=hf", "pass model.name="),
    Case("max_length_above_positions", ("model.max_length=1000",), "model.max_length", "model.max_length=256 or less"),
    Case("max_length_above_minilm", ("model=minilm", "model.max_length=513"), "model.max_length",
         "model.max_length=512 or less"),
    Case("method_layers_empty", ("method.layers=[]",), "method.layers", "or pass null for every layer"),
    Case("text_columns_empty", custom("ok.csv", "ok.csv", "task.text_columns=[]"), "task.text_columns", "one or two"),
    Case("text_columns_three", custom("ok.csv", "ok.csv", "task.text_columns=[text,text,text]"), "task.text_columns",
         "one or two"),
    # -- data cells: file, row and column named
    Case("label_empty", custom("label_empty.csv"), "label_empty.csv: data row 3, column 'label'", "fill it in"),
    Case("label_nan", custom("label_nan.csv"), "label_nan.csv: data row 3, column 'label'", "fill it in"),
    Case("label_short_row", custom("label_short_row.csv"), "label_short_row.csv: data row 3, column 'label'",
         "fill it in"),
    Case("dev_label_empty", custom("ok.csv", "label_empty.csv"), "label_empty.csv: data row 3, column 'label'",
         "fill it in"),
    Case("label_null_jsonl", custom("label_null.jsonl"), "label_null.jsonl: data row 3, column 'label'", "fill it in"),
    Case("label_bool_jsonl", custom("label_bool.jsonl"), "label_bool.jsonl: data row 1, column 'label'",
         "write it as text or a class name"),
    Case("text_null_jsonl", custom("text_null.jsonl"), "text_null.jsonl: data row 2, column 'text'", "fill it in"),
    Case("text_bool_jsonl", custom("text_bool.jsonl"), "text_bool.jsonl: data row 1, column 'text'",
         "write it as text"),
    Case("text_missing_jsonl", custom("text_missing.jsonl"), "text_missing.jsonl: data row 2, column 'text'",
         "fill it in"),
    Case("text_empty_csv", custom("text_empty.csv"), "text_empty.csv: data row 2, column 'text'", "fill it in"),
    Case("dev_label_unknown_word", custom("ok.csv", "dev_label_word.csv"),
         "dev_label_word.csv: data row 2, column 'label'", "outside ['0', '1']"),
    Case("regression_nan", custom("reg_nan.csv", "ok.csv", "task.problem=regression"),
         "reg_nan.csv: data row 2, column 'label'", "not a finite number"),
    Case("regression_inf", custom("ok.csv", "reg_inf.csv", "task.problem=regression"),
         "reg_inf.csv: data row 2, column 'label'", "not a finite number"),
    Case("regression_empty", custom("reg_empty.csv", "ok.csv", "task.problem=regression"),
         "reg_empty.csv: data row 2, column 'label'", "fill it in"),
    # -- output folders that cannot be created (checked before Hydra creates them)
    Case("run_dir_in_proc", ("hydra.run.dir=/proc/x",), "hydra.run.dir", "choose a writable hydra.run.dir"),
    Case("run_dir_dev_null", ("hydra.run.dir=/dev/null",), "hydra.run.dir", "is a file, not a folder"),
    Case("run_dir_is_a_file", ("hydra.run.dir={d}/ok.csv",), "hydra.run.dir", "is a file, not a folder"),
    Case("run_dir_under_a_file", ("hydra.run.dir={d}/ok.csv/run",), "hydra.run.dir", "is a file, not a folder"),
    Case("run_dir_name_too_long", (f"hydra.run.dir={{d}}/{'n' * 300}",), "hydra.run.dir", "choose a shorter"),
    Case("sweep_dir_in_proc", ("-m", "hydra.sweep.dir=/proc/x", "seed=1,2"), "hydra.sweep.dir",
         "choose a writable hydra.sweep.dir"),
    Case("sweep_dir_is_a_file", ("-m", "hydra.sweep.dir={d}/ok.csv", "seed=1,2"), "hydra.sweep.dir",
         "is a file, not a folder"),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad_inputs")
    write_files(d)
    return d


def with_run_dir(args: list[str], tmp_path: Path) -> list[str]:
    """``args`` with ``hydra.run.dir`` under ``tmp_path`` unless the case gives its own run or sweep folder."""
    own = any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args)
    return args if own else [*args, f"hydra.run.dir={tmp_path / 'run'}"]


def no_done_folder(root: Path) -> None:
    """Nothing under ``root`` looks like a finished run (no run.json at all: rejected before any start)."""
    assert not list(root.rglob("run.json")), list(root.rglob("run.json"))
    assert not list(root.rglob("summary.json"))


def contents(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` and its bytes (user files must be left unchanged)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_catalogue_is_large_and_distinct() -> None:
    assert len(CASES) >= 95
    assert len({c.id for c in CASES}) == len(CASES) and len({c.args for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, bad_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    if case.cpu_only and torch.cuda.is_available():
        pytest.skip("torch has CUDA here")
    monkeypatch.chdir(tmp_path)  # a sweep's default folder would go here
    args = with_run_dir([a.replace("{d}", str(bad_dir)) for a in case.args], tmp_path)
    before = contents(bad_dir)
    rc = main([*BASE, *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert case.names in lines[0] and case.fix in lines[0], lines[0]
    assert "Traceback" not in err
    no_done_folder(tmp_path)
    no_done_folder(bad_dir)
    assert contents(bad_dir) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main([*BASE, f"hydra.run.dir={ro / 'run'}"]) == 2
    finally:
        ro.chmod(0o755)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "hydra.run.dir" in lines[0] and "choose a writable" in lines[0]
    assert not list(ro.iterdir())


def test_a_folder_holding_another_run_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main([*BASE, "snapshot=none", f"hydra.run.dir={run_dir}"]) == 0
    before = (run_dir / "run.json").read_text()
    capsys.readouterr()
    assert main([*BASE, "snapshot=none", "method=dora", f"hydra.run.dir={run_dir}"]) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and str(run_dir) in line[0] and "train.force=true" in line[0]
    assert (run_dir / "run.json").read_text() == before  # the other run's record is untouched


# one case per stage that can fail: the output folder (before Hydra), Hydra's override parser, config composition,
# the data (in the job, after torch and transformers are imported; label_nan takes the same path as not_utf8)
SUBPROCESS = ["not_utf8", "override_syntax", "unknown_group_option", "run_dir_in_proc"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_real_process_prints_one_line_only(case_id: str, bad_dir: Path, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    args = with_run_dir([a.replace("{d}", str(bad_dir)) for a in case.args], tmp_path)
    env = {**os.environ, "GLUE_DIR": str(GLUE)}
    r = subprocess.run([sys.executable, "-m", "harness", *BASE, *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and case.names in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [r.stderr.strip().splitlines()[-1]], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    no_done_folder(tmp_path)


def describe() -> str:
    """The catalogue as a Markdown list (for the closing note)."""
    return "\n".join(f"- `{c.id}`: `{' '.join(c.args)}` → names `{c.names}`, fix “{c.fix}”" for c in CASES)


if __name__ == "__main__":
    print(describe())
