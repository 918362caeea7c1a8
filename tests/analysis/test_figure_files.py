"""analysis.figure_files: a figure saved as PNG + PDF + data CSV; the runs' setup read from their records."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.figure_files import run_setup, save_figure, with_setup


def test_save_figure_writes_png_pdf_and_the_data(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    data = pd.DataFrame({"x": [1, 2], "y": [3, 4]})
    paths = save_figure(fig, tmp_path / "new", "fig", data)
    assert [p.name for p in paths] == ["fig.png", "fig.pdf", "fig.csv"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    pd.testing.assert_frame_equal(pd.read_csv(paths[2]), data)
    assert not plt.fignum_exists(fig.number)  # closed


def test_run_setup_reads_run_json_then_summary_json(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / "run.json").write_text(json.dumps({"task": "rte", "model": "minilm", "method_label": "LoRA"}))
    (a / "summary.json").write_text(json.dumps({"method_label": "ignored", "method_color": "#123456"}))
    (b / "run.json").write_text(json.dumps({"task": "sst2", "model": "minilm"}))
    (c / "run.json").write_text("{not json")
    setup = run_setup([a, b, c]).set_index("run_dir")
    assert setup.loc[str(a)].tolist() == ["rte", "minilm", "LoRA", "#123456"]
    assert setup.loc[str(b), "task"] == "sst2" and pd.isna(setup.loc[str(b), "method_label"])
    assert setup.loc[str(c)].isna().all()  # unreadable: nothing known, nothing guessed
    points = pd.DataFrame({"run_dir": [str(a), str(b)], "task": ["given", "given"]})
    joined = with_setup(points)
    assert joined["task"].tolist() == ["given", "given"]  # the frame's own columns win
    assert joined["model"].tolist() == ["minilm", "minilm"] and joined["method_color"].iloc[0] == "#123456"
