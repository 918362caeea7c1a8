"""The HTML report: the sections a reader needs, comparable runs only in one figure, tables escaped, files
beside the page — and, in headless Chromium, no broken image, no raw Markdown, every section shown."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest

from analysis import inputs, report
from analysis.__main__ import main as cli
from tests.analysis.browser import check_page, find_chromium
from tests.analysis.test_compare import make_sweep, write_run

PEFT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "peft-method-comparison"
SECTIONS = ["overview", "setup", "runs", "comparison", "pareto", "curves", "environment"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of a synthetic sweep (4 methods × 2 tasks × 3 seeds, one failed run), none of its runs tracked in
    W&B: with ``--wandb auto`` (off is the default) it logs nothing (test_report_wandb_auto_logs_nothing_…)."""
    root = tmp_path_factory.mktemp("report")
    sweep = make_sweep(root)
    out = root / "report"
    assert cli(["report", str(sweep), "-o", str(out), "--no-method-figures", "--wandb", "auto"]) == 0
    return out


def _text(page: str) -> str:
    """The page's visible text, roughly (tags dropped)."""
    return " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", page, flags=re.S)).split())


def test_page_has_every_section_and_says_what_is_compared(built: Path) -> None:
    page = (built / "index.html").read_text()
    assert re.findall(r'<section id="([\w-]+)">', page) == SECTIONS
    assert "<h1>Full FT, LoRA, DoRA and AdaLoRA compared on minilm</h1>" in page
    text = _text(page)
    # setup: what every run shares, what varies
    assert "Common to every run" in text and "What varies between the runs" in text
    assert re.search(r"Optimizer steps\s*</td>\s*<td[^>]*>\s*20\s*<", page)  # common: 20 steps
    assert "SST-2 (12 runs); RTE (12 runs)" in text
    # runs: every run with status and folder, the failed one as left out
    assert "24_lora_sst2_s9" in text and "left out: status failed: boom" in text
    assert text.count("0_full_sst2_s0") == 1
    # comparison: intervals and verdicts
    assert "DoRA r=8" in text and "Student-t" in text and "The papers&#39; claims, checked" in page
    assert re.search(r"DoRA &gt; LoRA.*?(agrees|disagrees|inconclusive)", page, flags=re.S)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert "<pre" not in page and "page check" not in page and "**" not in text
    assert "0123456789" in text and "transformers" in text  # environment: git commit, versions


def test_every_figure_has_a_caption_saying_what_which_runs_and_seeds(built: Path) -> None:
    page = (built / "index.html").read_text()
    figs = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"><figcaption>([^<]*)</figcaption>',
                      page)
    assert len(figs) == 5  # the overview first (the sweep's summary.png), then Pareto + curves for each task
    alt, data, caption = figs[0]
    assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" and alt.startswith("Overview")
    assert "24 runs" in caption and "3 seeds each" in caption and "parameters trained" in caption, caption
    for alt, data, caption in figs[1:]:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
        assert "3 seeds each" in caption and "minilm, 20 steps" in caption and "12 runs" in caption, caption
        assert not re.search(r"\.(png|pdf)\b", caption + alt)


def test_files_beside_the_page(built: Path) -> None:
    names = {p.name for p in (built / "figures").iterdir()}
    for stem in ("overview", "pareto_minilm_sst2_20steps", "pareto_minilm_rte_20steps", "curves_minilm_sst2_20steps",
                 "curves_minilm_rte_20steps"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names and f"{stem}.csv" in names
    pareto = pd.read_csv(built / "figures" / "pareto_minilm_sst2_20steps.csv")
    assert set(pareto["task"]) == {"sst2"} and {"mean", "low", "high", "trainable_params"} <= set(pareto.columns)
    assert (built / "table.md").read_text().startswith("| Method |")
    assert "\\begin{tabular}" in (built / "table.tex").read_text()
    assert (built / "table_long.csv").read_text().count("\nconfiguration,") == 8  # and the contrasts below them


def test_runs_of_different_length_never_share_a_figure(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path / "long", f"lora_s{seed}", method="lora", seed=seed, steps=(100, 200), value=0.8 + seed / 100)
        write_run(tmp_path / "short", f"dora_s{seed}", method="dora", seed=seed, steps=(5, 10), value=0.6 + seed / 100)
    runs, skipped, metrics = inputs.load_inputs([tmp_path])
    data = report.load_report_data(runs, skipped, metrics, method_figures=False)
    assert [(k["task"], k["steps"]) for k, _ in report.groups(data.runs)] == [("sst2", 200), ("sst2", 10)]
    sections = {s.id: s for s in report.build_sections(data)}
    captions = [f.caption for f in sections["pareto"].figures]
    assert len(captions) == 2
    assert "200 steps" in captions[0] and "LoRA r=8" in captions[0] and "DoRA" not in captions[0]
    assert "10 steps" in captions[1] and "DoRA r=8" in captions[1] and "LoRA" not in captions[1]
    notes = [b.content for b in sections["setup"].blocks if b.kind == "note"]
    assert any("2 groups that are not comparable" in n for n in notes)


def test_setup_separates_common_and_varying_settings() -> None:
    runs = pd.DataFrame({"run_dir": ["a", "b"], "model": ["minilm", "minilm"], "task": ["sst2", "rte"],
                         "method": ["lora", "lora"], "budget": [8, 8], "seed": [0, 1], "steps": [300, 300],
                         "lr": [5e-4, 5e-4], "device": ["cpu", "cpu"], "source": ["harness", "harness"]})
    configs = {"a": {"train": {"batch_size": 32, "warmup_ratio": 0.06}, "task": {"max_train_samples": None}},
               "b": {"train": {"batch_size": 32, "warmup_ratio": 0.1}, "task": {"max_train_samples": None}}}
    common, varying = report.setup_tables(runs, configs)
    c = dict(zip(common["Setting"], common["Value"]))
    assert c["Model"] == "minilm" and c["Batch size"] == "32" and c["Optimizer steps"] == "300"
    assert c["Train examples"] == "all" and c["Method"] == "LoRA"
    v = dict(zip(varying["Setting"], varying["Values"]))
    assert v == {"Task": "SST-2 (1 run); RTE (1 run)", "Seed": "0 (1 run); 1 (1 run)",
                 "train.warmup_ratio (configuration)": "0.06 (1 run); 0.1 (1 run)"}


def test_a_method_label_from_the_record_is_used(tmp_path: Path) -> None:
    import json

    d = write_run(tmp_path, "vera_s0", method="vera")
    rec = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps({**rec, "method_label": "VeRA"}))
    runs, skipped, metrics = inputs.load_inputs([tmp_path])
    table = report.runs_table(runs, skipped)
    assert table["Method"].tolist() == ["VeRA"]  # the fallback table does not know it: "vera"


def test_text_is_escaped_in_the_page(tmp_path: Path) -> None:
    runs = pd.DataFrame({"run_dir": [str(tmp_path / "<b>x&y")], "method": ["<i>m</i>"], "task": ["t&t"],
                         "seed": [0], "steps": [3], "main_metric": ["accuracy"], "main_metric_value": [0.5]})
    sec = report.Section("runs", "Runs <now>")
    sec.add("p", "a < b & c")
    sec.add("table", report.render.render(report.runs_table(runs, []), fmt="html"))
    page = report.render_page([sec], title="T <x>")
    assert "<title>T &lt;x&gt;</title>" in page and "a &lt; b &amp; c" in page and "Runs &lt;now&gt;" in page
    assert "&lt;i&gt;m&lt;/i&gt;" in page and "&lt;b&gt;x&amp;y" in page and "<i>m</i>" not in page


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return path


@pytest.mark.slow
def test_report_in_headless_chromium(built: Path) -> None:
    res = check_page(built / "index.html", SECTIONS, chromium=_chromium())
    assert res["broken"] == [] and res["images"] == 4
    assert res["sections"] == SECTIONS
    assert res["markdown"] == "" and res["pre"] == 0


@pytest.mark.slow
def test_browser_check_catches_a_broken_image_raw_markdown_and_a_hidden_section(tmp_path: Path) -> None:
    tiny_png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    ok, bad, hidden = (report.Section("ok", "Fine"), report.Section("bad", "Broken"), report.Section("hidden", "Hidden"))
    ok.add("figure", report.Figure("ok", "fine", "a fine figure", tiny_png))
    bad.add("figure", report.Figure("bad", "broken", "a broken figure", b"not a png"))
    bad.add("p", "| a | b |\n|---|---|")
    hidden.add("table", "<style>#hidden{display:none}</style>")
    page = tmp_path / "bad.html"
    page.write_text(report.render_page([ok, bad, hidden], title="t"))
    res = check_page(page, ["ok", "bad", "hidden"], chromium=_chromium())
    assert res["images"] == 2 and res["broken"] == ["broken"]
    assert res["sections"] == ["ok", "bad"]
    assert res["markdown"] != ""


@pytest.mark.slow
@pytest.mark.skipif(not PEFT_DIR.is_dir(), reason="PEFT result files not present")
def test_report_on_peft_results_with_adalora_heatmap(tmp_path: Path) -> None:
    files = [str(PEFT_DIR / f) for f in ("lora--llama-3.2-3B-rank32.json", "lora--llama-3.2-3B-rank32-dora.json",
                                         "full-finetuning--llama-3.2-3B-lr_0.00001.json",
                                         "adalora--llama-3.2-3B-rank32.json")]
    out = tmp_path / "r"
    assert cli(["report", *files, "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "0.4784" in page and "0.4693" in page and "0.4716" in page and "NVIDIA L40S" in page
    assert '<section id="adalora">' in page and list((out / "figures").glob("adalora_*.png"))
    if find_chromium():
        res = check_page(out / "index.html", [*SECTIONS[:-1], "adalora", "environment"], chromium=find_chromium())
        assert res["broken"] == [] and "adalora" in res["sections"] and res["markdown"] == ""


def test_report_into_offline_wandb_reuses_one_run(tmp_path: Path) -> None:
    """--wandb on: the page and its figures land in one offline W&B run of the sweep's group (files under -o,
    nothing in the input folders); a second call continues the same run."""
    pytest.importorskip("wandb")
    sweep = make_sweep(tmp_path / "sweeps", failed=False, wandb=True)
    out = tmp_path / "out"
    for _ in range(2):
        assert cli(["report", str(sweep), "-o", str(out), "--no-method-figures", "--wandb", "on"]) == 0
    assert not list(sweep.rglob("wandb"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # one run id, resumed
    media = {p.name for r in runs for p in r.rglob("files/media/**/*") if p.is_file()}
    assert any(n.endswith(".html") for n in media), media
    assert sum(n.endswith(".png") for n in media) >= 4, media  # Pareto + curves for 2 tasks
    raw = b"".join(p.read_bytes() for r in runs for p in r.glob("*.wandb"))
    assert b"report-sweep" in raw


def test_report_wandb_auto_logs_nothing_for_untracked_runs(built: Path) -> None:
    assert (built / "index.html").is_file() and not (built / "wandb").exists()
    assert not list(built.parent.rglob("wandb"))


def test_two_seeds_are_drawn_seed_by_seed(tmp_path: Path) -> None:
    """The report's Pareto and learning-curve figures draw each of 2 seeds (their CSV files hold them)."""
    for seed in (0, 1):
        write_run(tmp_path / "sweep", f"{seed}_lora_rte_s{seed}", task="rte", seed=seed, value=0.6 + 0.1 * seed)
    out = tmp_path / "out"
    assert cli(["report", str(tmp_path / "sweep"), "-o", str(out), "--no-method-figures"]) == 0
    (curves,) = (out / "figures").glob("curves_*.csv")
    assert pd.read_csv(curves)["seed"].notna().sum() == 4
    (pareto,) = (out / "figures").glob("pareto_*.csv")
    assert pd.read_csv(pareto)["seed"].notna().sum() == 2


def test_weight_analysis_section_for_runs_with_snapshots(tmp_path: Path, one_thread: None) -> None:
    from tests.analysis.test_figures_spectra import CONFIGS, make_sweep as spectra_sweep

    spectra_sweep(tmp_path / "sweep", seeds=(0,), configs=CONFIGS[:3])
    for d in (tmp_path / "sweep").iterdir():  # the report needs a final metric per run
        if (d / "run.json").is_file():
            (d / "summary.json").write_text('{"main_metric": "accuracy", "main_metric_value": 0.8, "eval/accuracy": 0.8, '
                                            '"steps": 6}')
    out = tmp_path / "report"
    assert cli(["report", str(tmp_path / "sweep"), "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert '<section id="spectra">' in page and "Final values, mean over seeds" in page
    for stem in ("spectra_intruders_vs_rank", "spectra_spectrum", "spectra_similarity_reference", "spectra_over_steps"):
        assert (out / "figures" / f"{stem}.png").is_file() and (out / "figures" / f"{stem}.csv").is_file(), stem
