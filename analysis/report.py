"""``python -m analysis report RUNS… -o report/``: one self-contained HTML page comparing methods.

The page (``report/index.html``, figures embedded as data URIs, no external resources) holds: the runs
used and left out, the comparison tables (paper layout and long layout, with intervals over seeds),
Pareto plots, learning curves, the DoRA ΔM/ΔD figure and AdaLoRA rank heatmaps where the runs have
them (drawn by ``analysis.figures_dora`` / ``analysis.figures_adalora``), extra PNGs given with
``--figures``, and the environment (versions, devices, git commits) of the runs. Beside it:
``figures/`` (every figure as PNG + PDF) and ``table.md``, ``table.tex``, ``table.csv``.

A small inline script checks, on load, that every image decoded and every section is shown, and writes
the result into ``#report-check`` (read by the headless-browser test; :func:`check_in_browser`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import html
import importlib
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from analysis import compare, render
from analysis.labels import task_label
from analysis.table import add_common, check_options, load_finished, slug

log = logging.getLogger(__name__)


@dataclass
class Figure:
    """One embedded image: caption and PNG bytes."""

    caption: str
    png: bytes


@dataclass
class Section:
    """A block of the page: ``id`` (HTML anchor), title, optional HTML body and figures."""

    id: str
    title: str
    body: str = ""
    figures: list[Figure] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- rendering

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1250px;
 padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
nav a{margin-right:1rem} .meta{color:#666;font-size:.9rem}
table.cmp{border-collapse:collapse;font-size:.86rem;margin:.6rem 0}
table.cmp th,table.cmp td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
table.cmp th{background:#f3f5f7} table.cmp td:first-child,table.cmp th:first-child{text-align:left}
table.cmp td.best{background:#eaf6ea} table.cmp .txt{text-align:left} .note{color:#555;font-size:.82rem;margin:.1rem 0}
.scroll{overflow-x:auto} figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.85rem} ul.skipped{font-size:.85rem;color:#7a4b00}
#report-check{color:#888;font-size:.75rem;margin-top:3rem} pre{overflow-x:auto;font-size:.75rem;background:#fafafa;padding:.4rem}
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0 && im.naturalHeight > 0); });
  var want = JSON.parse(document.getElementById('report-sections').textContent);
  var shown = want.filter(function (id) {
    var el = document.getElementById(id);
    return el !== null && el.offsetHeight > 0 && window.getComputedStyle(el).display !== 'none'
      && window.getComputedStyle(el).visibility !== 'hidden';
  });
  var m = document.getElementById('report-check');
  m.setAttribute('data-images', String(imgs.length));
  m.setAttribute('data-broken', String(broken.length));
  m.setAttribute('data-broken-list', broken.map(function (im) { return im.alt; }).join(' | '));
  m.setAttribute('data-sections-shown', shown.join(' '));
  m.setAttribute('data-status', broken.length === 0 && shown.length === want.length ? 'ok' : 'fail');
  m.textContent = 'page check: ' + imgs.length + ' images, ' + broken.length + ' broken; sections shown '
    + shown.length + '/' + want.length;
});
"""


def png_bytes(fig: Any, *, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _img(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    cap = html.escape(f.caption)
    return f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'


def render_html(sections: Sequence[Section], *, title: str, subtitle: str = "") -> str:
    """The whole page: header, navigation, sections, the check marker and script."""
    ids = [s.id for s in sections]
    nav = " ".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        figs = "".join(_img(f) for f in s.figures)
        body.append(f'<section id="{html.escape(s.id)}"><h2>{html.escape(s.title)}</h2>{s.body}{figs}</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(subtitle)}</p><nav>{nav}</nav></header>"
        + "".join(body)
        + f'<div id="report-check" data-status="pending">page check did not run</div>'
        f'<script type="application/json" id="report-sections">{json.dumps(ids)}</script>'
        f"<script>{CHECK_SCRIPT}</script></body></html>\n"
    )


def _ul(items: Iterable[str], cls: str = "") -> str:
    lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return f'<ul class="{cls}">{lis}</ul>' if lis else ""


def environment_table(env: pd.DataFrame) -> str:
    """The environment frame as an HTML table (one row per distinct environment, with its run count)."""
    if env.empty:
        return "<p>No environment recorded.</p>"
    t = env.fillna("–").astype(str)
    return '<div class="scroll">' + render.render(t, fmt="html") + "</div>"


def build_sections(runs: pd.DataFrame, skipped: Sequence[tuple[Path, str]], long: pd.DataFrame,
                   cur: pd.DataFrame, env: pd.DataFrame, *, kind: str = "t", confidence: float = 0.95,
                   digits: int = 4, scale: float = 1.0, inputs: Sequence[str] = (),
                   method_figures: Sequence[Section] = (),
                   keep_figures: Optional[list[tuple[str, Any]]] = None) -> list[Section]:
    """Every section of the report from the frames (pure: figures are drawn and encoded in memory).

    ``keep_figures``: a list that receives ``(file stem, matplotlib Figure)`` of the Pareto and curve
    figures, left open for the caller to save (and close); without it they are closed here."""
    import matplotlib.pyplot as plt

    from analysis.plots import compare as pc

    sections = []
    n_src = runs["source"].value_counts().to_dict() if "source" in runs else {}
    summary = (f"<p>{len(runs)} finished run(s) used ({', '.join(f'{v} {k}' for k, v in n_src.items())}); "
               f"{len(long)} configuration(s) (model × task × method × budget); "
               f"tasks: {html.escape(', '.join(task_label(t) for t in dict.fromkeys(long['task'])))}.</p>")
    summary += "<p>Inputs:</p>" + _ul(inputs)
    if skipped:
        summary += f"<p>Left out ({len(skipped)} run(s) not done or unreadable):</p>" + _ul(
            (f"{p}: {why}" for p, why in skipped), "skipped")
    else:
        summary += "<p>No run was left out.</p>"
    sections.append(Section("runs", "Runs", summary))

    w = compare.wide(long)
    t, b = render.format_wide(w, kind=kind, digits=digits, scale=scale)
    foot = render.notes(long, kind=kind, confidence=confidence, layout="wide", scale=scale)
    sections.append(Section("table-wide", "Comparison (paper layout)",
                            '<div class="scroll">' + render.render(t, b, fmt="html", footer=foot) + "</div>"))
    t, b = render.format_long(long, kind=kind, confidence=confidence, digits=digits, scale=scale)
    foot = render.notes(long, kind=kind, confidence=confidence, layout="long", scale=scale)
    sections.append(Section("table-long", "Comparison per task (interval, seeds, cost)",
                            '<div class="scroll">' + render.render(t, b, fmt="html", footer=foot) + "</div>"))

    par = Section("pareto", "Pareto plots",
                  "<p class=\"note\">Metric (mean over seeds; error bars: the table's interval) against trainable "
                  "parameters (log), train time and peak memory. Dashed: the Pareto frontier (circled points: "
                  "no other configuration is better on both axes).</p>")
    lc = Section("curves", "Learning curves",
                 "<p class=\"note\">Eval metric per step: mean over seeds, band: the interval over seeds at each step.</p>")
    def done(stem: str, fig: Any) -> None:
        if keep_figures is None:
            plt.close(fig)
        else:
            keep_figures.append((stem, fig))

    for (model, task), _ in long.groupby(["model", "task"], sort=False):
        name = f"{task_label(task)}" + (f" — {model}" if long["model"].nunique() > 1 else "")
        stem = slug(f"{model}_{task}")
        fig = pc.pareto_figure(long, task=task, model=model)
        par.figures.append(Figure(f"Pareto: {name}", png_bytes(fig)))
        done(f"pareto_{stem}", fig)
        if not cur.empty and ((cur["task"] == task) & (cur["model"] == model)).any():
            fig = pc.curves_figure(cur, tasks=[task], model=model)
            lc.figures.append(Figure(f"Learning curves: {name}", png_bytes(fig)))
            done(f"curves_{stem}", fig)
    if not lc.figures:
        lc.body += "<p>No evaluation steps were logged.</p>"
    sections += [par, lc]
    sections += [s for s in method_figures if s.figures]
    sections.append(Section("environment", "Environment", environment_table(env)))
    return sections


# --------------------------------------------------------------------------------------------- loading

def environment_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct environment of the runs (versions, device, git commit) with a run count.
    Harness runs: ``run.json``'s environment and git; PEFT results: ``meta_info``."""
    from analysis.load import load_run_record
    from analysis.peft_format import read_result

    rows = []
    for _, r in runs.iterrows():
        rd = r["run_dir"]
        try:
            if r.get("source") == "peft":
                mi = read_result(rd).get("meta_info", {})
                pk, si = mi.get("package_info", {}), mi.get("system_info", {})
                rows.append({"source": "peft", "python": None, "torch": pk.get("torch-version"),
                             "transformers": pk.get("transformers-version"), "peft": pk.get("peft-version"),
                             "harness": None, "device": si.get("accelerator") or si.get("gpu"),
                             "platform": " ".join(filter(None, [si.get("system"), si.get("release")])) or None,
                             "git": None})
            else:
                rec = load_run_record(rd)
                e, g = rec.get("environment", {}), rec.get("git", {}) or {}
                commit = g.get("commit")
                rows.append({"source": "harness", "python": e.get("python"), "torch": e.get("torch"),
                             "transformers": e.get("transformers"), "peft": e.get("peft"),
                             "harness": e.get("harness"),
                             "device": " ".join(filter(None, [e.get("device"), e.get("gpu"),
                                                              f"CUDA {e['cuda']}" if e.get("cuda") else None])),
                             "platform": e.get("platform"),
                             "git": (commit[:10] + (" (dirty)" if g.get("dirty") else "")) if commit else None})
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: no environment (%s)", rd, err)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    cols = list(df.columns)
    return df.fillna("–").groupby(cols, sort=False).size().reset_index(name="runs")


def method_figure_sections(runs: pd.DataFrame, out: Path) -> list[Section]:
    """DoRA ΔM/ΔD and AdaLoRA heatmaps, drawn by ``analysis.figures_dora`` / ``analysis.figures_adalora``
    (when importable) into ``out/dora`` and ``out/adalora``; every PNG they write is embedded. Runs
    without snapshots / rank records give no figure (and no section)."""
    src = runs["source"] if "source" in runs else pd.Series("harness", index=runs.index)
    harness_dirs = sorted(set(runs.loc[src == "harness", "run_dir"]))
    peft_adalora = sorted(set(runs.loc[(src == "peft") & (runs["method"] == "adalora"), "run_dir"]))
    methods = set(runs["method"]) if "method" in runs else set()
    jobs = [
        ("dora", "analysis.figures_dora", "DoRA: magnitude vs direction (ΔM vs ΔD)",
         harness_dirs if harness_dirs and methods & {"dora", "lora", "full", "adalora"} else [], ["--wandb", "off"]),
        ("adalora", "analysis.figures_adalora", "AdaLoRA: rank allocation heatmaps",
         harness_dirs if "adalora" in methods else [],
         [a for p in peft_adalora for a in ("--from-peft-json", p)]),
    ]
    sections = []
    for sid, modname, title, dirs, extra in jobs:
        if not dirs and not (sid == "adalora" and extra):
            continue
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            log.info("%s not available (%s); no %s figures", modname, e, sid)
            continue
        target = out / sid
        target.mkdir(parents=True, exist_ok=True)
        parser = argparse.ArgumentParser(prog=modname)
        mod.add_arguments(parser)
        argv = [*dirs, "--out", str(target), *extra]
        if "--wandb" in argv and not any(a.option_strings and "--wandb" in a.option_strings for a in parser._actions):
            i = argv.index("--wandb")
            del argv[i:i + 2]
        captured = io.StringIO()
        try:
            args = parser.parse_args(argv)
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                rc = mod.main(args)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - another module's failure must not stop the report
            level = logging.INFO if isinstance(e, FileNotFoundError) else logging.WARNING
            log.log(level, "%s: no figure (%s: %s)", modname, type(e).__name__, _short_msg(e))
            if not any(target.iterdir()):
                target.rmdir()
            continue
        log.debug("%s said: %s", modname, captured.getvalue())
        pngs = sorted(target.rglob("*.png"))
        if not any(target.iterdir()):
            target.rmdir()
        if rc not in (0, None) and not pngs:
            last = (captured.getvalue().strip().splitlines() or [""])[-1]
            log.info("%s: no figure (exit %s): %s", modname, rc, _short_msg(last))
            continue
        sec = Section(sid, title, f'<p class="note">Drawn by <code>{html.escape(modname)}</code>; files in '
                                  f'<code>figures/{sid}/</code>.</p>')
        md = sorted(target.glob("*.md"))
        for m in md:
            sec.body += f"<pre>{html.escape(m.read_text()[:4000])}</pre>"
        sec.figures = [Figure(p.stem.replace("_", " "), p.read_bytes()) for p in pngs]
        sections.append(sec)
    return sections


def _short_msg(msg: object, limit: int = 200) -> str:
    s = str(msg)
    return s if len(s) <= limit else s[:limit] + " …"


def extra_figure_section(dirs: Sequence[str]) -> Optional[Section]:
    """PNGs found under the ``--figures`` folders, embedded as they are."""
    pngs = [p for d in dirs for p in sorted(Path(d).rglob("*.png"))]
    if not pngs:
        return None
    return Section("more-figures", "More figures", "", [Figure(str(p), p.read_bytes()) for p in pngs])


# --------------------------------------------------------------------------------------------- browser check

def find_chromium() -> Optional[str]:
    """Path of a Chromium / Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--virtual-time-budget=15000"]


def check_in_browser(page: str | Path, *, chromium: Optional[str] = None, timeout: float = 90) -> dict[str, Any]:
    """Open ``page`` in headless Chromium, let the page's check script run, and return its verdict:
    ``status`` (ok / fail / pending), ``images``, ``broken``, ``broken_list``, ``sections_shown``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                               Path(page).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    m = re.search(r'<div id="report-check"([^>]*)>', proc.stdout)
    if m is None:
        raise RuntimeError(f"chromium returned no page (exit {proc.returncode}): {proc.stderr[-2000:]}")
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
    return {"status": attrs.get("data-status"), "images": int(attrs.get("data-images", -1)),
            "broken": int(attrs.get("data-broken", -1)), "broken_list": html.unescape(attrs.get("data-broken-list", "")),
            "sections_shown": attrs.get("data-sections-shown", "").split()}


# --------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``report``."""
    p.add_argument("runs", nargs="+", help="run folders, sweep folders, PEFT result files or folders")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: a new ./analysis-report-<time>/; never the input folders)")
    p.add_argument("--title", default=None, help="page title")
    add_common(p)
    p.add_argument("--figures", action="append", default=[], metavar="DIR",
                   help="also embed every PNG under DIR (repeatable)")
    p.add_argument("--no-method-figures", action="store_true",
                   help="skip the DoRA ΔM/ΔD and AdaLoRA heatmap figures")
    p.add_argument("--check", action="store_true", help="open the page in headless Chromium and check it")


def main(args: argparse.Namespace) -> int:
    """Build ``<output>/index.html`` (+ figures/, table.md|tex|csv); 1 when no finished run was found."""
    import matplotlib.pyplot as plt

    from analysis.outputs import out_folder

    check_options(args)
    out = out_folder(args.output, "-o/--output", "report")
    loaded = load_finished(args, "report on")
    if loaded is None:
        return 1
    runs, skipped, metrics, opts = loaded
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    scale = 100.0 if args.percent else 1.0
    long = compare.compare(runs, **opts)
    cur = compare.curves(runs, metrics, metric=args.metric, kind=args.interval, confidence=args.confidence)

    for fmt, ext in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        (out / f"table.{ext}").write_text(render.table_text(runs, fmt=fmt, digits=args.digits, scale=scale, **opts))
    (out / "table_long.csv").write_text(render.table_text(runs, fmt="csv", layout="long", **opts))

    method_secs = [] if args.no_method_figures else method_figure_sections(runs, figdir)
    extra = extra_figure_section(args.figures)
    env = environment_frame(runs)
    figures: list[tuple[str, Any]] = []
    sections = build_sections(runs, skipped, long, cur, env, kind=args.interval, confidence=args.confidence,
                              digits=args.digits, scale=scale, inputs=[str(p) for p in args.runs],
                              method_figures=method_secs + ([extra] if extra else []), keep_figures=figures)
    for stem, fig in figures:  # the same figures as files (PNG + PDF) beside the page
        fig.savefig(figdir / f"{stem}.png", dpi=150, bbox_inches="tight")
        fig.savefig(figdir / f"{stem}.pdf", bbox_inches="tight")
        plt.close(fig)
    title = args.title or "Methods compared: " + ", ".join(task_label(t) for t in dict.fromkeys(long["task"]))
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    page = out / "index.html"
    page.write_text(render_html(sections, title=title, subtitle=f"generated {stamp} by python -m analysis report"))
    print(f"wrote {page} ({len(sections)} sections) and {figdir}/, table.md|tex|csv")
    if args.check:
        res = check_in_browser(page)
        print(f"browser check: {res['status']}: {res['images']} images, {res['broken']} broken, "
              f"sections shown: {' '.join(res['sections_shown'])}")
        return 0 if res["status"] == "ok" else 1
    return 0
