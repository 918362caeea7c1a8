"""``python -m analysis diff``: configuration keys and summary metrics that differ; a non-run exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.diff import diff_text, differences, flatten
from tests.analysis.test_compare import write_run


def test_config_and_metric_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path, "a", method="lora", lr=5e-4, value=0.90)
    b = write_run(tmp_path, "b", method="lora", lr=1e-3, value=0.92)
    text = diff_text(str(a), str(b))
    config = text.split("metrics")[0]
    assert "configuration: 1 difference(s)" in config and "method.lr" in config and "0.0005" in config
    metric = next(ln for ln in text.splitlines() if ln.strip().startswith("main_metric_value"))
    assert metric.split()[1:] == ["0.9", "0.92", "+0.02"]
    assert "method.name" not in text  # equal keys are not listed
    assert main(["diff", str(a), str(a)]) == 0
    out = capsys.readouterr().out
    assert "configuration: identical" in out and "metrics (summary.json): identical" in out


def test_keys_of_one_run_only() -> None:
    a = flatten({"method": {"name": "adalora", "target_r": 8}, "seed": 0})
    b = flatten({"method": {"name": "lora", "r": 8}, "seed": 0})
    rows = {k: (x, y) for k, x, y in differences(a, b)}
    assert set(rows) == {"method.name", "method.target_r", "method.r"}
    assert rows["method.target_r"][0] == 8 and rows["method.r"][1] == 8


def test_not_a_run_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path, "a")
    (tmp_path / "plain").mkdir()
    assert main(["diff", str(a), str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: RUN_B:") and "not a run folder" in err[0]
    (a / "summary.json").write_text("{torn")
    assert main(["diff", str(a), str(a)]) == 2
    assert "summary.json is unreadable" in capsys.readouterr().err
    json.loads((a / "run.json").read_text())
