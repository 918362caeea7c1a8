"""``python -m harness.eval``: a saved adapter or full model scores what its run scored at the end; another
task with the same labels works; bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.eval import evaluate_saved, main
from harness.run import run
from tests.conftest import TINY, compose_cfg


@pytest.mark.parametrize("method", ["lora", "full"])
def test_saved_run_scores_its_final_eval(method: str, tmp_path: Path, one_thread: None) -> None:
    run(compose_cfg([*TINY, f"method={method}", "snapshot=none"]), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    result = evaluate_saved(tmp_path, [])
    assert result["task"] == "sst2" and result["examples"] == 32
    assert result["eval/accuracy"] == summary["eval/accuracy"]
    assert result["eval/loss"] == pytest.approx(summary["eval/loss"], rel=1e-5)
    saved = next(p for p in (tmp_path / "adapter", tmp_path / "model") if p.is_dir())
    other = evaluate_saved(saved, ["task=rte", "task.max_eval_samples=20"])
    assert other["task"] == "rte" and other["examples"] == 20 and 0 <= other["eval/accuracy"] <= 1


def test_cli_prints_the_main_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    run(compose_cfg([*TINY, "method=lora", "snapshot=none"]), tmp_path / "run")
    assert main([str(tmp_path / "run" / "adapter")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sst2: accuracy ") and "on 32 dev examples" in out[0]
    # bad input: each one line, exit 2
    (tmp_path / "plain").mkdir()
    for args, expect in (([str(tmp_path / "plain")], "not a run folder"),
                         ([str(tmp_path / "run"), "task=stsb"], "task=stsb: 1 label(s)"),
                         ([str(tmp_path / "run"), "task=nosuch"], "task=nosuch: no such task"),
                         ([str(tmp_path / "run"), "train.lr=1"], "train.lr: cannot be changed"),
                         ([], "FOLDER: missing")):
        assert main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expect in err[0], (args, err)
