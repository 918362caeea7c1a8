"""harness.record: the run folder's names live there only, reading validates each key (types, ranges, finite
numbers, pids), older records migrate, exports are strict JSON, and the module stays pure (analysis imports it)."""

from __future__ import annotations

import ast
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import record as R
from tests.conftest import ROOT

GOOD = {"schema": 2, "status": "done", "started": 1.0, "ended": 2.0, "pid": 123, "host": "h", "attempt": 1,
        "attempts": [], "resumed_from": [None, 4], "seed": 0, "budget": 8, "config_hash": "ab", "total_steps": 10,
        "config": {"method": {"name": "lora", "r": 8}, "train": {"lr": None}}, "lr": 5e-4, "environment": {}}


def write(run_dir: Path, name: str, data: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize(("key", "value", "why"), [
    ("pid", -1, "must be an integer in 1..2147483647, got -1"),
    ("pid", 0, "must be an integer in 1..2147483647, got 0"),
    ("pid", 10**30, "got an integer of 31 digits"),
    ("pid", True, "must be an integer"),
    ("pid", 2**31, "must be an integer in 1..2147483647"),
    ("status", "finished", "must be one of running, done, failed, replacing"),
    ("config", "lora", "must be a JSON object, got \"lora\""),
    ("started", float("nan"), "must be a finite number >= 0, got nan"),
    ("lr", float("inf"), "must be a finite number >= 0, got inf"),
    ("lr", "abc", "must be a finite number >= 0, got \"abc\""),
    ("seed", -3, "must be an integer in 0.."),
    ("attempt", 0, "must be an integer in 1.."),
    ("resumed_from", [1, "x"], "item 1 must be an integer"),
    ("attempts", {"a": 1}, "must be a JSON list"),
    ("schema", 3, "must be an integer in 1..2"),
])
def test_each_bad_value_is_named_by_its_key(key: str, value: Any, why: str, tmp_path: Path) -> None:
    write(tmp_path, R.RUN_FILE, {**GOOD, key: value})
    with pytest.raises(R.BadRecord) as e:
        R.read_run(tmp_path)
    assert e.value.key == key and why in e.value.why and str(e.value).startswith(f"{tmp_path / R.RUN_FILE}: {key}:")


@pytest.mark.parametrize(("content", "key", "why"), [
    ('{"status": "done", "seed": ', "(file)", "not JSON"),
    (b'{"status": "d\xe9ne"}', "(file)", "not UTF-8"),
    ("[1, 2]", "(top level)", "must be a JSON object, got a JSON list"),
    ('{"seed": ' + "9" * 5000 + "}", "(file)", "not JSON"),
    ('{"config": {"method": "lora"}}', "config.method", "must be a JSON object"),
    ('{"config": {"method": {"name": 7}}}', "config.method.name", "must be a string"),
])
def test_files_that_are_not_records(content: Any, key: str, why: str, tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    p = tmp_path / R.RUN_FILE
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    with pytest.raises(R.BadRecord) as e:
        R.read_run(tmp_path)
    assert e.value.key == key and why in e.value.why and len(str(e.value)) < 300


def test_summary_metrics_may_be_nan_but_not_text(tmp_path: Path) -> None:
    write(tmp_path, R.SUMMARY_FILE, '{"eval/accuracy": NaN, "main_metric_value": Infinity, "steps": 3}')
    s = R.read_summary(tmp_path)
    assert math.isnan(s["eval/accuracy"]) and s["main_metric_value"] == math.inf
    write(tmp_path, R.SUMMARY_FILE, {"best_valid/f1": "abc"})
    with pytest.raises(R.BadRecord, match="best_valid/f1: must be a number or null"):
        R.read_summary(tmp_path)
    write(tmp_path, R.SUMMARY_FILE, '{"train_seconds": 1' + "0" * 400 + ".5}")  # reads as inf
    with pytest.raises(R.BadRecord, match="train_seconds: must be a finite number"):
        R.read_summary(tmp_path)
    assert R.read_summary(tmp_path / "nothing") == {}


def test_status_is_derived_from_the_process(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for status in (R.RUNNING, R.REPLACING):
        write(tmp_path, R.RUN_FILE, {**GOOD, "status": status, "pid": int(dead.stdout), "host": socket.gethostname()})
        rec = R.read_run(tmp_path)
        assert rec["status"] == R.CRASHED and rec["recorded_status"] == status and not R.is_result(rec)
        assert R.read_run(tmp_path, derive=False)["status"] == status
    write(tmp_path, R.RUN_FILE, {**GOOD, "status": R.RUNNING, "pid": os.getppid(), "host": socket.gethostname()})
    assert R.read_run(tmp_path)["status"] == R.RUNNING  # a live process
    write(tmp_path, R.RUN_FILE, {**GOOD, "status": R.RUNNING, "host": "another-host"})
    assert R.read_run(tmp_path)["status"] == R.RUNNING  # cannot be checked from here
    assert R.read_run(tmp_path / "none") == {"status": R.MISSING}


@pytest.mark.parametrize("pid", [-1, 0, 10**30, 2**31, "1", None, True])
def test_alive_is_false_for_what_is_no_pid(pid: Any) -> None:
    assert R.alive(pid) is False  # never os.kill(-1, 0) (every process), never an OverflowError


def test_older_records_migrate(tmp_path: Path) -> None:
    old = {k: v for k, v in GOOD.items() if k not in ("schema", "budget", "attempt")}
    old["config"] = {"method": {"name": "adalora", "target_r": 4, "init_r": 6}}
    write(tmp_path, R.RUN_FILE, old)
    rec = R.read_run(tmp_path)
    assert rec["budget"] == 4 and rec["attempt"] == 1
    write(tmp_path, R.RUN_FILE, {**old, "config": {"method": {"name": "full"}}})
    assert R.read_run(tmp_path)["budget"] is None
    write(tmp_path, R.RUN_FILE, {**old, "config": {"method": {"name": "lora", "r": "8"}}})  # not a rank
    assert R.read_run(tmp_path)["budget"] is None


def test_config_falls_back_to_config_json(tmp_path: Path) -> None:
    write(tmp_path, R.RUN_FILE, {**GOOD, "config": {}})
    write(tmp_path, R.CONFIG_FILE, {"seed": 3})
    assert R.read_config(tmp_path) == {"seed": 3}
    write(tmp_path, R.CONFIG_FILE, "[]")
    with pytest.raises(R.BadRecord, match="top level"):
        R.read_config(tmp_path)


def test_metrics_rows() -> None:
    assert R.metrics_row('{"step": 3, "train/loss": NaN}\n')["step"] == 3
    for line, why in (('{"step": 3, "x', "not JSON"), ("[1]", "not a JSON object"), ('{"loss": 1}', "step must"),
                      ('{"step": -1}', "step must"), ('{"step": ' + "1" * 5000 + "}", "not JSON")):
        with pytest.raises(ValueError, match=why):
            R.metrics_row(line)


def test_json_safe_is_strict_json() -> None:
    import numpy as np

    data = {"a": float("nan"), "b": [float("-inf"), np.float32(1.5), np.int64(3)], "c": Path("/x"), 1: None}
    text = json.dumps(R.json_safe(data), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [None, 1.5, 3], "c": "/x", "1": None}


def test_atomic_writes_replace_links_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "theirs.json"
    target.write_text("theirs")
    (tmp_path / "run.json").symlink_to(target)
    R.write_json_atomic(tmp_path / "run.json", {"status": "done"})
    assert target.read_text() == "theirs" and json.loads((tmp_path / "run.json").read_text())["status"] == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "theirs.json"]
    assert R.temp_owner(R.temp_name(tmp_path / "run.json").name) == os.getpid()


def test_record_file_names_are_spelled_in_the_record_module_only() -> None:
    """No string constant in harness/ or analysis/ (outside harness/record.py) is a record file's name."""
    names = {R.RUN_FILE, R.SUMMARY_FILE, R.CONFIG_FILE, R.METRICS_FILE, R.ERROR_FILE, R.MANIFEST_FILE, R.LOCK_FILE,
             R.SELECTION_FILE}
    found = []
    for pkg in ("harness", "analysis"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f == ROOT / "harness" / "record.py":
                continue
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert found == []


def test_the_record_module_is_pure() -> None:
    """analysis reads run folders through it: importing it loads no torch, transformers or training code."""
    code = ("import sys, harness.record; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'peft', 'wandb') or m in ('harness.run', 'harness.loop')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
