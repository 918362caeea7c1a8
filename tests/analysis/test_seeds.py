"""``python -m analysis seeds``: the seeds each contrast needs, from a pilot's per-seed values."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from analysis.__main__ import main as cli
from tests.analysis.test_compare import write_run


def test_seeds_from_the_pilot_variance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lora, dora = [0.80, 0.82, 0.81, 0.79], [0.805, 0.83, 0.80, 0.81]
    for seed, (a, b) in enumerate(zip(lora, dora)):
        write_run(tmp_path, f"l{seed}", method="lora", seed=seed, value=a)
        write_run(tmp_path, f"d{seed}", method="dora", seed=seed, value=b)
    assert cli(["seeds", str(tmp_path), "--format", "csv", "--power", "0.9"]) == 0
    out = pd.read_csv(StringIO(capsys.readouterr().out))
    assert len(out) == 1
    r = out.iloc[0]
    d = np.subtract(dora, lora)
    assert r["sd"] == pytest.approx(d.std(ddof=1)) and r["difference"] == pytest.approx(d.mean()) and bool(r["paired"])
    assert r["seeds_needed"] == stats.seeds_needed(d.std(ddof=1), d.mean(), margin=0.01, power=0.9)
    assert r["more"] == max(0, r["seeds_needed"] - 4)
    assert cli(["seeds", str(tmp_path)]) == 0
    assert "Seeds needed" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--power", "1"], ["--margin", "-1"]])
def test_bad_options(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, "a", method="lora", seed=0)
    assert cli(["seeds", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.startswith(f"error: {args[0]}")
