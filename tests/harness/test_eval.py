"""``python -m harness.eval``: a saved adapter or full model scores what its run scored at the end; another
task with the same labels works; bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.eval import evaluate_saved, main
from harness.methods import get_method
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
    other = evaluate_saved(saved, ["task=rte", "task.max_eval_samples=20"], task_mismatch_ok=True)
    assert other["task"] == "rte" and other["examples"] == 20 and 0 <= other["eval/accuracy"] <= 1


def test_cli_prints_the_main_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    run(compose_cfg([*TINY, "method=lora", "snapshot=none"]), tmp_path / "run")
    assert main([str(tmp_path / "run" / "adapter")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sst2: accuracy ") and "on 32 dev examples" in out[0]
    # bad input: each one line, exit 2
    (tmp_path / "plain").mkdir()
    for args, expect in (([str(tmp_path / "plain")], "not a run folder"),
                         ([str(tmp_path / "run"), "task=stsb", "--task-mismatch-ok"], "task=stsb: 1 label(s)"),
                         ([str(tmp_path / "run"), "task=nosuch"], "task=nosuch: no such task"),
                         ([str(tmp_path / "run"), "train.lr=1"], "train.lr: cannot be changed"),
                         ([], "FOLDER: missing")):
        assert main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expect in err[0], (args, err)


def test_a_method_that_saves_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """The saved folder is the method's declaration (Method.save_dir), not a fixed adapter/ or model/: the run
    saves there, harness.eval scores it from the run folder or that folder, refuses another sub-folder, and a
    later attempt clears it as it clears adapter/ (so no stale weights are scored)."""
    import harness.run

    monkeypatch.setattr(get_method("lora"), "save_dir", classmethod(lambda cls: "weights"))
    overrides = [*TINY, "method=lora", "snapshot=none"]
    run(compose_cfg(overrides), tmp_path)
    assert (tmp_path / "weights" / "adapter_config.json").is_file() and not (tmp_path / "adapter").exists()
    final = json.loads((tmp_path / "summary.json").read_text())["eval/accuracy"]
    for folder in (tmp_path, tmp_path / "weights"):
        assert evaluate_saved(folder, [])["eval/accuracy"] == final
    with pytest.raises(ConfigError, match=r"not where the run's method \(lora\) saves; pass the run folder"):
        evaluate_saved(tmp_path / "snapshots", [])

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.run, "train", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run(compose_cfg([*overrides, "train.force=true"]), tmp_path)
    assert not (tmp_path / "weights").exists()
    with pytest.raises(ConfigError, match=r"the run is failed \(RuntimeError: boom\).*pass --allow-failed"):
        evaluate_saved(tmp_path, [])
    with pytest.raises(ConfigError, match="holds no saved adapter or model"):
        evaluate_saved(tmp_path, [], allow_failed=True)


def test_another_task_is_refused_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture, one_thread: None) -> None:
    """A run trained on sst2 scored on rte: exit 2 with one line naming --task-mismatch-ok; with it, one
    warning line and the score; the run's own task (also given as task=sst2) needs no flag."""
    run(compose_cfg([*TINY, "method=lora", "snapshot=none"]), tmp_path / "run")
    assert main([str(tmp_path / "run"), "task=rte"]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert captured.out == "" and len(err) == 1 and err[0].startswith("error: task=rte:"), err
    assert "trained on sst2" in err[0] and "--task-mismatch-ok" in err[0]
    assert main([str(tmp_path / "run"), "task=rte", "task.max_eval_samples=20", "--task-mismatch-ok"]) == 0
    warned = [r for r in caplog.records if "trained on sst2" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert capsys.readouterr().out.startswith("rte: accuracy ")
    caplog.clear()
    assert main([str(tmp_path / "run"), "task=sst2"]) == 0
    assert not any("trained on" in r.getMessage() for r in caplog.records)


def test_eval_log_is_quiet_unless_verbose(tmp_path: Path, one_thread: None) -> None:
    """Loading a saved full model is where transformers talks (the weight-loading bar); harness.eval silences
    it as runs do (harness.summaries.configure_output), and --verbose brings it back."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.harness.test_summaries import CHATTER

    run(compose_cfg([*TINY, "method=full", "snapshot=none", "train.max_steps=2"]), tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # one fresh process (imports cost seconds): quiet first, then --verbose, stderr parted by a mark
    mark = "=== --verbose ==="
    code = ("import sys; from harness.eval import main; quiet = main([sys.argv[1]]); "
            f"print({mark!r}, file=sys.stderr, flush=True); sys.exit(quiet or main([sys.argv[1], '--verbose']))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0 and mark in r.stderr, r.stderr[-2000:]
    quiet_err, loud_err = r.stderr.split(mark + "\n")
    assert r.stdout.startswith("sst2: accuracy ") and r.stdout.count("\nsst2: accuracy ") == 1, r.stdout
    assert quiet_err.strip() == "", quiet_err[-2000:]
    assert any(text in loud_err for text in CHATTER), loud_err[-2000:]
