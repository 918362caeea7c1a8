"""Every folder of docs/results names the commit and command that made it, and its numbers re-derive from
the per-run values stored beside it with the code that ships."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
SHARED = ROOT.parent / "shared"


def folders() -> list[Path]:
    return sorted(p for p in RESULTS.iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", folders(), ids=lambda p: p.name)
def test_every_results_folder_names_its_commit_and_command(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    prov = text[text.index("## Provenance"):]
    assert re.search(r"commit `[0-9a-f]{7,40}`", prov), f"{folder.name}: no commit in its provenance"
    assert "python -m " in text, f"{folder.name}: no command"


def _same_csv(a: Path, b: Path, ignore: tuple[str, ...] = ("run_dir",)) -> None:
    """Equal numbers and labels; ``ignore``: columns holding where the inputs lay (paths)."""
    x, y = (pd.read_csv(f).drop(columns=list(ignore), errors="ignore") for f in (a, b))
    pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9, atol=1e-12)


def test_adalora_peft_re_derives(tmp_path: Path) -> None:
    src = SHARED / "data" / "peft-method-comparison" / "adalora--llama-3.2-3B-rank32.json"
    if not src.is_file():
        pytest.skip("no ../shared beside the checkout")
    assert main(["figures", "adalora", "--from-peft-json", str(src), "-o", str(tmp_path)]) == 0
    for f in sorted((RESULTS / "adalora_peft").glob("*.csv")):
        _same_csv(f, tmp_path / f.name)


def test_compare_re_derives_from_its_runs(tmp_path: Path) -> None:
    folder = RESULTS / "compare"
    out = tmp_path / "table_long.csv"
    assert main(["table", str(folder / "runs.csv"), "--layout", "long", "--format", "csv", "-o", str(out)]) == 0
    _same_csv(folder / "table_long.csv", out)


@pytest.mark.parametrize("name,matrix", [("dora_fig2", "Wq"), ("dora_fig2", "Wv"), ("dora_fig2_ft_lr", "Wq")])
def test_dora_fig2_statistics_re_derive_from_its_points(name: str, matrix: str, tmp_path: Path) -> None:
    folder = RESULTS / name
    assert main(["figures", "dora", "--from-points", str(folder / f"dora_fig2_{matrix}_points.csv"), "--type", matrix,
                 "-o", str(tmp_path)]) == 0
    for name in (f"dora_fig2_{matrix}_stats.csv", f"dora_fig2_{matrix}_per_seed.csv"):
        _same_csv(folder / name, tmp_path / name)


def test_dora_fig2_has_ten_seeds_per_method() -> None:
    per_seed = pd.read_csv(RESULTS / "dora_fig2" / "dora_fig2_Wq_per_seed.csv")
    assert per_seed.groupby(["method", "axis"])["seed"].nunique().min() >= 10
