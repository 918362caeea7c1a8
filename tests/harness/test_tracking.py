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


# ------------------------------------------------------------------------- what an offline W&B run holds

def wandb_records(run_dir: Path) -> Iterator[Any]:
    """The records of the run's offline ``.wandb`` file, decoded with W&B's own protobuf schema.

    The file is a LevelDB-format log (W&B's 7-byte header ``:W&B``, 0xBEE1, version 0; then 32 KiB blocks of
    records, each a 7-byte header crc32 / length / type FULL=1 FIRST=2 MIDDLE=3 LAST=4, a block's tail of < 7
    bytes zero-padded); wandb 0.31 ships no Python reader of it, ``wandb sync`` reads it in its Go core.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert struct.unpack_from("<4sHB", data) == (b":W&B", 0xBEE1, 0)
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_offline_run_holds_name_tags_tables_and_model(tmp_path: Path) -> None:
    """Read back with W&B's own record schema: the short name, tags, ≤ 60 history keys, the snapshot table per
    checkpoint, a table from a non-scalar summary value (AdaLoRA's rank pattern), the model artifact."""
    from tests.conftest import method_args

    cfg = compose_cfg([*TINY, *method_args("adalora"), "tracking=offline", "tracking.project=t"])
    run(cfg, tmp_path, tags=("mypreset",))
    records = list(wandb_records(tmp_path))
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "summary", "artifact", "metric"} <= kinds
    start = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert start.display_name == "adalora-b8-sst2-s0"
    assert {"sst2", "tiny_bert", "mypreset"} <= set(start.tags)
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    keys = {item.nested_key[0] if item.nested_key else item.key for h in history for item in h.item}
    assert len(keys) <= 60, sorted(keys)
    assert {"step", "train/loss", "eval/accuracy", "snapshot/matrices", "snapshot/mean/dW_fro"} <= keys
    assert not any(k.count("/") == 2 and k.startswith("snapshot/") and "/mean/" not in k for k in keys)
    table_steps = [h.step.num for h in history for item in h.item if item.nested_key[:1] == ["snapshot/matrices"]
                   and item.nested_key[1:] == ["_type"]]
    assert table_steps == json.loads((tmp_path / "summary.json").read_text())["snapshot/steps"]  # one per snapshot
    metrics = {r.metric.name: r.metric for r in records if r.WhichOneof("record_type") == "metric"}
    assert metrics["eval/accuracy"].summary.max and metrics["eval/accuracy"].summary.last
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                summary[u.key or "/".join(u.nested_key)] = u.value_json
    pattern = json.loads(summary["adalora/rank_pattern"])
    assert pattern["_type"] == "table-file" and pattern["ncols"] >= 4
    (model,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
    assert json.loads(model.metadata)["method"]["name"] == "adalora"
    assert any(c.path == "adapter_config.json" for c in model.manifest.contents)


def test_publish_reuses_one_analysis_run(tmp_path: Path) -> None:
    """Two calls for the same analysis of the same sweep group go into one W&B run (same id, resumed), with the
    figure as an image, the page as HTML, the table, and other files saved as they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from harness.tracking import publish

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "fig.png")
    plt.close(fig)
    (tmp_path / "report.html").write_text("<html><body><h1>report</h1></body></html>")
    (tmp_path / "notes.md").write_text("# notes\n")
    files = {"figures/fig": tmp_path / "fig.png", "report": tmp_path / "report.html", "notes": tmp_path / "notes.md"}
    table = {"comparison/long": pd.DataFrame({"method": ["a", "b"], "mean": [0.5, 0.6]})}
    ids = []
    for out in (tmp_path / "first", tmp_path / "second"):
        where = publish(out, name="comparison-sweep", group="sweep", files=files, tables=table)
        assert where is not None and Path(where).is_relative_to(out)
        records = list(wandb_records(out))
        start = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert start.display_name == "comparison-sweep" and start.run_group == "sweep"
        keys = {i.nested_key[0] if i.nested_key else i.key for r in records
                if r.WhichOneof("record_type") == "history" for i in r.history.item}
        assert {"figures/fig", "report", "comparison/long"} <= keys
        assert list(out.glob("wandb/offline-run-*/files/notes.md"))
        ids.append(start.run_id)
    assert ids[0] == ids[1]


def test_run_name_from_the_config() -> None:
    from harness.tracking import run_name

    assert run_name(compose_cfg(["method=adalora", "budget=4", "task=rte", "seed=2"])) == "adalora-b4-rte-s2"
    assert run_name(compose_cfg(["method=lora"])) == "lora-b8-sst2-s0"
    assert run_name(compose_cfg(["method=full"])) == "full-sst2-s0"  # its config does not use the budget
    assert run_name(compose_cfg(["method=lora", "method.r=4"])) == "lora-sst2-s0"  # r set directly


def test_summary_tables_of_any_non_scalar_value() -> None:
    from harness.tracking import summary_table

    assert summary_table(0.5) is None and summary_table("x") is None
    assert summary_table([{"matrix": "a", "rank": 2}, {"matrix": "b", "rank": 0, "extra": [1]}]) == (
        ["matrix", "rank", "extra"], [["a", 2, None], ["b", 0, "[1]"]])
    assert summary_table({"Wq": 3, "Wv": 4}) == (["key", "value"], [["Wq", 3], ["Wv", 4]])
    # a column mixing types is text (W&B refuses it otherwise): a run's ``speed`` record
    assert summary_table({"Wq": 3, "Wv": {"x": 1}}) == (["key", "value"], [["Wq", "3"], ["Wv", '{"x": 1}']])
    assert summary_table({"path": "graphs", "graphs": 0, "failed": None, "ok": True}) == (
        ["key", "value"], [["path", "graphs"], ["graphs", "0"], ["failed", None], ["ok", "true"]])
    assert summary_table([[1, 8, 8], [2, 7]]) == (["c0", "c1", "c2"], [[1, 8, 8], [2, 7, None]])
    assert summary_table([0, 3, 6]) == (["value"], [[0], [3], [6]])
