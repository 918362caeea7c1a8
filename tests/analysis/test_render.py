"""analysis.render: display tables through pandas Styler (HTML, LaTeX) and by hand (Markdown), escaped."""

from __future__ import annotations

import re

import pandas as pd

from analysis import render

TABLE = pd.DataFrame({"Method": ["LoRA <r=8>", "DoRA & co_1"], "Mean ↑": ["0.50 ± 0.10", "0.60"]})
BEST = pd.DataFrame({"Method": [False, False], "Mean ↑": [False, True]})


def test_html_is_escaped_with_best_and_text_classes() -> None:
    out = render.render(TABLE, BEST, fmt="html", footer=["a < b"], caption="Cap & <i>")
    assert re.search(r'<table id="T_\w+" class="cmp">', out)
    assert "LoRA &lt;r=8&gt;" in out and "DoRA &amp; co_1" in out and "<r=8>" not in out
    assert "<caption>Cap &amp; &lt;i&gt;</caption>" in out and '<p class="note">a &lt; b</p>' in out
    cells = re.findall(r'<td [^>]*class="([^"]*)"[^>]*>([^<]*)</td>', out)
    assert [(c.split()[-1], v.strip()) for c, v in cells] == [
        ("txt", "LoRA &lt;r=8&gt;"), ("col1", "0.50 ± 0.10"), ("txt", "DoRA &amp; co_1"), ("best", "0.60")]


def test_two_tables_on_one_page_have_different_ids() -> None:
    a = render.render(TABLE, fmt="html")
    b = render.render(TABLE.iloc[:1], fmt="html")
    assert re.search(r'id="(T_\w+)"', a).group(1) != re.search(r'id="(T_\w+)"', b).group(1)


def test_latex_escapes_and_bolds_through_styler() -> None:
    out = render.render(TABLE, BEST, fmt="latex", footer=["50% of runs"], caption="Cap_1")
    assert "\\begin{tabular}{lr}" in out and "\\toprule" in out and "\\bottomrule" in out
    assert "LoRA <r=8> & 0.50 $\\pm$ 0.10 \\\\" in out
    assert "DoRA \\& co\\_1 & \\textbf{0.60} \\\\" in out
    assert "Method & Mean $\\uparrow$ \\\\" in out and "\\caption{Cap\\_1 50\\% of runs}" in out


def test_markdown_bolds_and_escapes_pipes() -> None:
    t = TABLE.assign(Method=["a|b", "c"])
    out = render.render(t, BEST, fmt="markdown", footer=["note"])
    assert out.splitlines()[:4] == ["| Method | Mean ↑ |", "|---|---:|", "| a\\|b | 0.50 ± 0.10 |", "| c | **0.60** |"]
    assert out.rstrip().endswith("note")


def test_per_run_csv_reads_back_and_re_derives_every_table(tmp_path: Path) -> None:
    """``table --layout runs`` writes the per-run values; the tables made from that file alone equal those made
    from the run folders (what docs/results relies on)."""
    from analysis.__main__ import main
    from tests.analysis.test_compare import write_run

    sweep = tmp_path / "sweep"
    for seed, (a, b, c) in enumerate([(0.80, 0.81, 0.70), (0.82, 0.84, 0.71), (0.79, 0.80, 0.69)]):
        write_run(sweep, f"l{seed}", method="lora", seed=seed, value=a)
        write_run(sweep, f"d{seed}", method="dora", seed=seed, value=b)
        write_run(sweep, f"f{seed}", method="full", seed=seed, value=c, budget=None)
    runs_csv = tmp_path / "runs.csv"
    assert main(["table", str(sweep), "--layout", "runs", "--format", "csv", "-o", str(runs_csv)]) == 0
    head = runs_csv.read_text().splitlines()[0].split(",")
    assert head[:4] == ["run_dir", "config_hash", "model", "task"] and "eval/accuracy" in head
    for layout in ("long", "wide"):
        for fmt in ("csv", "markdown"):
            a, b = tmp_path / f"a_{layout}.{fmt}", tmp_path / f"b_{layout}.{fmt}"
            assert main(["table", str(sweep), "--layout", layout, "--format", fmt, "-o", str(a)]) == 0
            assert main(["table", str(runs_csv), "--layout", layout, "--format", fmt, "-o", str(b)]) == 0
            assert a.read_text() == b.read_text()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main(["table", str(tmp_path / "other.csv")]) == 2
