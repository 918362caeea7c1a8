"""``python -m benchmarks.bench_defaults`` measures every setup of a method and writes its rows as it goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_defaults import main, markdown


def test_every_setup_is_measured_and_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["--workloads", "llama", "--llama-model", "tiny", "--llama-seq", "16", "--methods", "lora",
                 "--setups", "defaults,eager,bare,trainer", "--llama-steps", "2", "--llama-warmup", "1",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["setup"] for r in rows] == ["defaults", "eager", "bare", "trainer"]
    assert all(r["ms_per_step"] > 0 and "error" not in r for r in rows)
    assert len(out.with_suffix(".rows.jsonl").read_text().splitlines()) == 4  # written as measured
    assert "| lora |" in capsys.readouterr().out


def test_markdown_ratio_is_defaults_over_the_best_peer() -> None:
    rows = [{"workload": "w", "method": "lora", "setup": s, "ms_per_step": ms} for s, ms in
            (("defaults", 10.0), ("eager", 20.0), ("bare", 15.0))]
    rows.append({"workload": "w", "method": "lora", "setup": "trainer", "error": "x"})
    assert "| lora | 10.0 ms | 20.0 ms | 15.0 ms | failed | 1.50× |" in markdown(rows)


def test_unknown_setup_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workloads", "llama", "--setups", "fast"]) == 2
    assert "--setups" in capsys.readouterr().err
