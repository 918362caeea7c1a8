"""Never touch what the harness did not write: a foreign folder is refused before anything is written, user files
beside a run survive ``train.force=true``, user files where the harness writes are refused; a run that fails after
starting leaves a true record (run.json failed + the error.txt the log names), one that never started leaves none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.__main__ import main
from harness.run_folder import MANIFEST
from tests.conftest import TINY

RUN = [*TINY, "train.max_steps=2"]
HYDRA = {".hydra", "app.log"}  # written by Hydra into hydra.run.dir before the job starts


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but Hydra's own, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in HYDRA}


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.strip()]


USER_FILES: dict[str, dict[str, str]] = {
    "config_json": {"config.json": '{"mine": 1}'},
    "snapshot_file": {"snapshots/x": "my snapshot"},
    "model_folder": {"model/weights.bin": "my model"},
    "adapter_folder": {"adapter/adapter_config.json": "{}"},
    "notes": {"notes.txt": "my notes"},
    "metrics": {"metrics.jsonl": '{"step": 1}\n'},
}


@pytest.mark.parametrize("files", USER_FILES.values(), ids=list(USER_FILES))
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_foreign_folder_is_refused_untouched(files: dict[str, str], force: bool, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "mine"
    for rel, text in files.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    before = tree(run_dir)
    capsys.readouterr()
    assert main([*RUN, f"train.force={str(force).lower()}", f"hydra.run.dir={run_dir}"]) == 2
    lines = error_lines(capsys)
    first = Path(next(iter(files))).parts[0]
    assert len(lines) == 1 and lines[0].startswith(f"error: {run_dir}: not empty and not a harness run folder"), lines
    assert first in lines[0] and "choose an empty folder or a new hydra.run.dir" in lines[0]
    assert tree(run_dir) == before
    assert {p.name for p in run_dir.iterdir()} - HYDRA == {Path(r).parts[0] for r in files}  # nothing of ours


def done_run(run_dir: Path, *more: str) -> dict[str, bytes]:
    assert main([*RUN, *more, f"hydra.run.dir={run_dir}"]) == 0
    return tree(run_dir)


def test_force_removes_only_what_the_harness_wrote(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done_run(run_dir)
    (run_dir / "notes.txt").write_text("my notes")
    (run_dir / "mine").mkdir()
    (run_dir / "mine" / "plot.png").write_bytes(b"\x89PNG")
    first = json.loads((run_dir / "run.json").read_text())
    assert main([*RUN, "train.force=true", f"hydra.run.dir={run_dir}"]) == 0
    assert json.loads((run_dir / "run.json").read_text())["attempt"] == first["attempt"] + 1
    assert (run_dir / "notes.txt").read_text() == "my notes"
    assert (run_dir / "mine" / "plot.png").read_bytes() == b"\x89PNG"
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert "notes.txt" not in manifest["entries"] and "mine" not in manifest["entries"]
    assert {"run.json", "config.json", "metrics.jsonl", "snapshots", "adapter"} <= set(manifest["entries"])


@pytest.mark.parametrize("rel", ["snapshots/mine.txt", "adapter/notes.md"])
def test_a_user_file_inside_a_harness_folder_is_refused(rel: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Redoing the run would remove the whole folder; the harness refuses instead (naming the file)."""
    run_dir = tmp_path / "run"
    done_run(run_dir)
    (run_dir / rel).write_text("mine")
    before = tree(run_dir)
    capsys.readouterr()
    assert main([*RUN, "train.force=true", f"hydra.run.dir={run_dir}"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {run_dir}: holds {rel}, which the harness did not write")
    assert "move it out or choose a new hydra.run.dir" in lines[0]
    assert tree(run_dir) == before


def test_a_user_folder_where_this_run_would_write_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A LoRA run's folder gets a user's model/; full fine-tuning there (force) would write model/: refused."""
    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=none")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "weights.bin").write_bytes(b"mine")
    before = tree(run_dir)
    capsys.readouterr()
    assert main([*RUN, "snapshot=none", "method=full", "train.force=true", f"hydra.run.dir={run_dir}"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "holds model/, which the harness did not write and would overwrite" in lines[0]
    assert tree(run_dir) == before


def test_a_failure_after_start_leaves_run_json_failed_and_the_error_txt_the_log_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Even a failure before training (here: opening metrics.jsonl) is recorded."""
    import harness.run as run_mod

    def broken(path: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(run_mod, "JsonlLogger", broken)
    run_dir = tmp_path / "run"
    assert main([*RUN, "snapshot=none", f"hydra.run.dir={run_dir}"]) == 1
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "failed" and "Permission denied" in rec["error"]
    assert "PermissionError" in (run_dir / "error.txt").read_text()
    named = [ln for ln in capsys.readouterr().out.splitlines() if "traceback in" in ln]  # Hydra's console log
    assert len(named) == 1 and named[0].endswith(f"(traceback in {run_dir / 'error.txt'})")


def test_never_started_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid keep_base_output entry is caught before start: exit 2, one line, no record, only Hydra's files."""
    run_dir = tmp_path / "run"
    assert main([*RUN, "method=dora", "method.keep_base_output=[Wx]", f"hydra.run.dir={run_dir}"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: method.keep_base_output: 'Wx' matches none")
    assert {p.name for p in run_dir.iterdir()} <= HYDRA
