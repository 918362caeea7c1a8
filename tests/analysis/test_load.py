"""Loading run folders that are corrupt or partial: each bad file and run is reported by name, the others load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from analysis.load import load_metrics, load_runs
from tests.analysis.test_compare import write_run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two good runs and one run per kind of damage."""
    root = tmp_path / "sweep"
    write_run(root, "good0", seed=0)
    write_run(root, "good1", seed=1, value=0.8)
    (write_run(root, "torn_record", seed=2) / "run.json").write_text('{"status": "done", "seed": ')
    (write_run(root, "latin1_record", seed=3) / "run.json").write_bytes(b'{"status": "d\xe9ne"}')
    (write_run(root, "list_record", seed=4) / "run.json").write_text("[1, 2]")
    (write_run(root, "torn_summary", seed=5) / "summary.json").write_text('{"eval/accuracy": 0.')
    (write_run(root, "no_summary", seed=6) / "summary.json").unlink()
    write_run(root, "failed", seed=7, status="failed")
    return root


def test_bad_runs_are_named_and_the_others_load(sweep: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    runs = load_runs([sweep])
    why = {Path(p).name: reason for p, reason in runs.skipped}
    assert set(why) == {"torn_record", "latin1_record", "list_record", "torn_summary", "failed"}
    for name in ("torn_record", "latin1_record", "list_record"):
        assert why[name].startswith("run.json unreadable")
    assert why["torn_summary"].startswith("summary.json unreadable")
    assert why["failed"] == "status failed: boom"
    loaded = sorted(Path(p).name for p in runs.table["run_dir"])
    assert loaded == ["good0", "good1", "no_summary"]  # a done run without summary.json is kept, and reported
    assert any("no_summary" in r.getMessage() and "summary.json is missing" in r.getMessage() for r in caplog.records)
    assert runs.table.set_index("seed").loc[1, "eval/accuracy"] == 0.8


def test_metrics_with_torn_non_utf8_and_odd_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = write_run(tmp_path, "r")
    with open(d / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 30, "train/loss": 0.1}\n')
        f.write(b'{"step": 31, "note": "caf\xe9"}\n')  # a byte that is not UTF-8 is replaced; the row is kept
        f.write(b"[1, 2]\n")
        f.write(b'{"step": 40, "train/lo')  # torn by a kill
    caplog.set_level(logging.WARNING)
    df = load_metrics(d)
    assert df["step"].max() == 31 and len(df) == 4 + 2
    assert "caf\ufffd" in set(df["note"].dropna())
    messages = [r.getMessage() for r in caplog.records]
    assert any("metrics.jsonl: line 7 is not a JSON object" in m for m in messages)
    assert any("metrics.jsonl: line 8 is not JSON" in m for m in messages)


def test_table_command_reports_and_continues(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.__main__ import main

    out = tmp_path / "table.md"
    assert main(["table", str(sweep), "-o", str(out), "--wandb", "off"]) == 0
    err = capsys.readouterr().err
    assert "left out 5 run(s)" in err and "torn_record" in err and "latin1_record" in err
    assert "LoRA r=8" in out.read_text()


def test_corrupt_snapshot_file_is_named(tmp_path: Path) -> None:
    from analysis.decomposition import open_snapshots
    from harness.run import run
    from tests.conftest import TINY, compose_cfg

    run(compose_cfg([*TINY, "method=lora"]), tmp_path)
    snaps = open_snapshots(tmp_path)
    target = tmp_path / "snapshots" / snaps.index["file"].iloc[-1]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    problems = snaps.verify()
    assert len(problems) == 1 and target.name in problems[0] and "checksum" in problems[0]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"


def test_budget_is_read_from_the_record_and_guessed_only_for_older_records(tmp_path: Path) -> None:
    """run.json names the budget since it was recorded (a parameter-matched AdaLoRA run: init_r = budget = 8,
    target_r = 5); records written before it are read as they were, from the method's target_r or r."""
    new = write_run(tmp_path, "new", method="adalora", budget=5)  # method config: target_r 5
    rec = json.loads((new / "run.json").read_text())
    rec["budget"] = 8
    rec["config"]["method"].update(init_r=8, match="params")
    (new / "run.json").write_text(json.dumps(rec))
    write_run(tmp_path, "old", method="adalora", budget=4, seed=1)
    write_run(tmp_path, "old_full", method="full", budget=8, seed=2)
    full = write_run(tmp_path, "new_full", method="full", budget=8, seed=3)
    rec = json.loads((full / "run.json").read_text())
    (full / "run.json").write_text(json.dumps({**rec, "budget": None}))
    runs = load_runs([tmp_path]).table.set_index("seed")["budget"]
    assert runs[0] == 8 and runs[1] == 4
    assert runs[2] is None or runs[2] != runs[2]  # None (NaN in a float column)
    assert runs[3] is None or runs[3] != runs[3]


def test_edge_choices_name_the_points_still_at_a_grid_edge(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from analysis.load import edge_choices

    sweep = tmp_path / "s"
    (sweep / "0_run").mkdir(parents=True)
    points = [{"point": "task=rte method=lora", "chosen": 16.0, "at_grid_edge": True,
               "candidates": [{"value": v} for v in (1.0, 4.0, 8.0, 16.0)]},
              {"point": "task=rte method=full", "chosen": 2.0, "at_grid_edge": False, "candidates": [{"value": 2.0}]}]
    (sweep / "selection.json").write_text(json.dumps({"key": "train.lr_scale", "points": points}))
    (line,) = edge_choices([sweep / "0_run"])
    assert line.startswith("task=rte method=lora: train.lr_scale=16.0 chosen at the edge of the values tried "
                           "[1.0, 4.0, 8.0, 16.0]")
    (sweep / "selection.json").write_text("{")
    assert edge_choices([sweep / "0_run"]) == [] and "unreadable" in caplog.text
