"""The HTML report: self-contained, every section present, images valid — and checked in headless Chromium."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from analysis import report
from analysis.__main__ import main as cli
from tests.analysis.test_compare import make_sweep

PEFT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "peft-method-comparison"
SECTIONS = ["runs", "table-wide", "table-long", "pareto", "curves", "environment"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of a synthetic sweep (4 methods × 2 tasks × 3 seeds, one failed run)."""
    root = tmp_path_factory.mktemp("report")
    sweep = make_sweep(root)
    out = root / "report"
    assert cli(["report", str(sweep), "-o", str(out), "--no-method-figures"]) == 0
    return out


def test_page_is_self_contained_with_every_section(built: Path) -> None:
    page = (built / "index.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert 'class="cmp"' in page and "DoRA r=8" in page and "Student-t" in page
    assert "24_lora_sst2_s9: status failed: boom" in page  # left-out runs listed
    assert "0123456789" in page and "transformers" in page  # environment: git commit, versions
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    imgs = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert len(imgs) == 4  # Pareto + curves for each task
    for _, data in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_files_beside_the_page(built: Path) -> None:
    names = {p.name for p in (built / "figures").iterdir()}
    for stem in ("pareto_minilm_sst2", "pareto_minilm_rte", "curves_minilm_sst2", "curves_minilm_rte"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    assert (built / "table.md").read_text().startswith("| Method |")
    assert "\\begin{tabular}" in (built / "table.tex").read_text()
    assert (built / "table_long.csv").read_text().count("\n") == 9


def test_extra_figures_are_embedded(tmp_path: Path, built: Path) -> None:
    extra = tmp_path / "figs"
    extra.mkdir()
    (extra / "a.png").write_bytes((built / "figures" / "pareto_minilm_sst2.png").read_bytes())
    sec = report.extra_figure_section([str(extra)])
    assert sec is not None and sec.id == "more-figures" and len(sec.figures) == 1
    assert report.extra_figure_section([str(tmp_path / "none")]) is None


def _chromium() -> str:
    path = report.find_chromium()
    if path is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return path


def test_report_in_headless_chromium(built: Path) -> None:
    res = report.check_in_browser(built / "index.html", chromium=_chromium())
    assert res["broken"] == 0, res["broken_list"]
    assert res["images"] == 4
    assert res["sections_shown"] == SECTIONS
    assert res["status"] == "ok"


def test_browser_check_catches_a_broken_image(tmp_path: Path) -> None:
    chromium = _chromium()
    tiny_png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    sections = [report.Section("ok", "Fine", "<p>x</p>", [report.Figure("fine", tiny_png)]),
                report.Section("bad", "Broken", "<p>y</p>", [report.Figure("broken", b"not a png")]),
                report.Section("hidden", "Hidden", '<style>#hidden{display:none}</style>')]
    page = tmp_path / "bad.html"
    page.write_text(report.render_html(sections, title="t"))
    res = report.check_in_browser(page, chromium=chromium)
    assert res["status"] == "fail" and res["images"] == 2 and res["broken"] == 1 and res["broken_list"] == "broken"
    assert res["sections_shown"] == ["ok", "bad"]


@pytest.mark.skipif(not PEFT_DIR.is_dir(), reason="PEFT result files not present")
def test_report_on_peft_results_with_adalora_heatmap(tmp_path: Path) -> None:
    files = [str(PEFT_DIR / f) for f in ("lora--llama-3.2-3B-rank32.json", "lora--llama-3.2-3B-rank32-dora.json",
                                         "full-finetuning--llama-3.2-3B-lr_0.00001.json",
                                         "adalora--llama-3.2-3B-rank32.json")]
    out = tmp_path / "r"
    assert cli(["report", *files, "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "0.4784" in page and "0.4693" in page and "0.4716" in page and "NVIDIA L40S" in page
    try:
        import analysis.figures_adalora  # noqa: F401
    except ImportError:
        return
    assert '<section id="adalora">' in page and list((out / "figures" / "adalora").glob("*.png"))
    if report.find_chromium():
        res = report.check_in_browser(out / "index.html")
        assert res["status"] == "ok" and "adalora" in res["sections_shown"]
