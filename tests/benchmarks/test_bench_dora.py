"""``python -m benchmarks.bench_dora`` times PEFT's DoRA Linear and both fused variants on the same input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_dora import VARIANTS, main


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_bench_dora_reports_every_variant(dropout: float, tmp_path: Path) -> None:
    """(``--threads 0``: the CLI's default of 1 thread would change this process's torch thread count for the
    tests after it, whose in-process runs are compared bit for bit with subprocess runs.)"""
    out = tmp_path / "dora.json"
    assert main(["--d-in", "48", "--d-out", "40", "--tokens", "32", "--r", "4", "--reps", "2", "--warmup", "1",
                 "--dropout", str(dropout), "--threads", "0", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert list(rep["results"]) == list(VARIANTS) == ["peft", "fused", "fused_keep"]
    for name, r in rep["results"].items():
        assert len(r["ms"]) == 2 and r["median_ms"] > 0 and r["peak_mib"] is None  # CPU: no peak memory
        if name != "peft":
            assert r["speedup"] == pytest.approx(rep["results"]["peft"]["median_ms"] / r["median_ms"])
    assert rep["max_abs_diff"] < 1e-5  # the same dropout mask: outputs equal PEFT's
