"""``python -m analysis runs``: a row per run whatever its status; a folder without runs exits 2."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.runs import age, run_rows
from tests.analysis.test_compare import write_run


def test_a_row_per_run_with_status_metric_and_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "sweep", "a", method="lora", seed=0, value=0.91)
    write_run(tmp_path / "sweep", "b", method="adalora", budget=4, seed=1, status="failed")
    write_run(tmp_path / "sweep", "c", method="full", budget=None, seed=2, value=0.93)
    (tmp_path / "sweep" / "d").mkdir()
    (tmp_path / "sweep" / "d" / "run.json").write_text("{torn")
    rows = run_rows([str(tmp_path / "sweep")], now=1_700_000_100.0 + 3600 * 5)
    assert list(rows["status"]) == ["done", "failed", "done", "unreadable"]
    assert list(rows["method"])[:3] == ["lora", "adalora", "full"] and list(rows["budget"])[:2] == [8, 4]
    assert pd.isna(rows.loc[2, "budget"]) and list(rows["seed"])[:3] == [0, 1, 2]
    assert rows.loc[0, "metric"] == "accuracy" and rows.loc[0, "value"] == pytest.approx(0.91)
    assert rows.loc[0, "age"] == "5h" and pd.isna(rows.loc[1, "value"])
    assert main(["runs", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "0.9100" in out and "4 run(s): 2 done, 1 failed, 1 unreadable" in out
    assert main(["runs", str(tmp_path / "sweep"), "--format", "csv"]) == 0
    header = "status,steps,total_steps,method,task,budget,seed,metric,value,age,folder\n"
    assert capsys.readouterr().out.startswith(header)


def test_age_units() -> None:
    assert [age(s) for s in (5, 90, 7200, 3 * 86400)] == ["5s", "1m", "2h", "3d"]


@pytest.mark.parametrize(("make", "expect"), [(False, "no such run or sweep folder"), (True, "no run folder")])
def test_no_runs_exits_2_with_one_line(make: bool, expect: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty"
    if make:
        folder.mkdir()
    assert main(["runs", str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expect in err[0]


def test_steps_column_done_and_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``steps``: steps done / total — summary.json's for a finished run, the last logged step of metrics.jsonl for
    one still running or stopped (its run.json's total_steps as the total)."""
    import json

    write_run(tmp_path / "sweep", "a", steps=(100, 300))
    b = write_run(tmp_path / "sweep", "b", steps=(100, 300), status="failed")
    with open(b / "metrics.jsonl", "w") as f:
        for step in (10, 20, 40):
            f.write(json.dumps({"step": step, "train/loss": 0.5}) + "\n")
        f.write('{"step": 5')  # a torn last line is skipped
    write_run(tmp_path / "sweep", "c", steps=(100, 300), status="failed")  # nothing logged yet
    rows = run_rows([str(tmp_path / "sweep")])
    assert list(rows["steps"]) == [300, 40, 0] and list(rows["total_steps"]) == [300, 300, 300]
    assert main(["runs", str(tmp_path / "sweep")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["status", "steps"]
    assert [ln.split()[:2] for ln in lines[1:4]] == [["done", "300/300"], ["failed", "40/300"], ["failed", "0/300"]]
