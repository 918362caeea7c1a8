"""Tracking outages: W&B failing to start (bad mode, unwritable folder, no network) or to log gives exactly
one warning, and the run finishes with its local records (metrics.jsonl is the source of truth)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.run import run
from harness.tracking import truncate_metrics
from tests.conftest import TINY, compose_cfg

OFFLINE = ["tracking=offline", "tracking.project=outage", "snapshot=none"]


@pytest.fixture(autouse=True)
def fresh_wandb() -> Iterator[None]:
    """W&B reads its environment once per process (wandb.setup); start and end each test with a fresh one."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def wandb_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "harness.tracking" and r.levelno == logging.WARNING]


def assert_done_locally(run_dir: Path) -> None:
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any("eval/accuracy" in r for r in rows)


def start_failures() -> list[tuple[str, list[str], dict[str, str]]]:
    return [
        ("bad mode in the environment", [], {"WANDB_MODE": "bogus"}),
        ("no network", ["tracking=online", "tracking.init_timeout=3"],
         {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}),
    ]


@pytest.mark.parametrize(("why", "extra", "env"), start_failures(), ids=[w for w, _, _ in start_failures()])
def test_wandb_failing_to_start_warns_once(why: str, extra: list[str], env: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.WARNING)
    run(compose_cfg([*TINY, "method=lora", *OFFLINE, *extra]), tmp_path)
    warnings = wandb_warnings(caplog)
    assert len(warnings) == 1 and "failed to start" in warnings[0] and "local records" in warnings[0], warnings
    assert_done_locally(tmp_path)


def test_unwritable_wandb_folder_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import wandb

    def unwritable(*a: Any, **k: Any) -> None:  # what wandb.init raises when it cannot create <run>/wandb
        raise PermissionError(13, "Permission denied", str(tmp_path / "wandb"))

    # (a user's own file at <run>/wandb would make the harness refuse the folder before W&B starts)
    monkeypatch.setattr(wandb, "init", unwritable)
    caplog.set_level(logging.WARNING)
    run(compose_cfg([*TINY, "method=lora", *OFFLINE]), tmp_path)
    assert len(wandb_warnings(caplog)) == 1
    assert_done_locally(tmp_path)


def test_wandb_failing_to_log_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    import wandb.sdk.wandb_run as wandb_run

    calls = {"n": 0}

    def broken_log(self: Any, *a: Any, **k: Any) -> None:
        calls["n"] += 1
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(wandb_run.Run, "log", broken_log)
    caplog.set_level(logging.WARNING)
    run(compose_cfg([*TINY, "method=lora", *OFFLINE]), tmp_path)
    warnings = wandb_warnings(caplog)
    assert calls["n"] == 1 and len(warnings) == 1 and "failed to log" in warnings[0]
    assert_done_locally(tmp_path)


def test_truncate_metrics_keeps_rows_up_to_the_step(tmp_path: Path) -> None:
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"step": 4, "a"')
    assert truncate_metrics(f, 2) == 2
    assert f.read_text() == '{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n'
