"""``python -m analysis report RUNS… -o DIR``: one self-contained HTML page comparing methods, fit to send.

Sections: **Overview** (the one-page figure a sweep writes as its summary.png: metric per configuration with
its interval, parameters trained, train time; :mod:`analysis.overview`), **Setup** (what every run shares, what
varies), **Runs** (each run: name, status, method, task,
seed, steps, score, folder; the runs left out and why), **Comparison** (the paper-layout table with intervals
over seeds, the papers' method-vs-method claims with verdicts, the long table with costs), **Pareto plots**
and **Learning curves**, **DoRA: magnitude vs direction** and **AdaLoRA: rank allocation** where the runs
recorded snapshots / ranks, and **Environment**. Figures are drawn per group of comparable runs (same model,
task and number of optimizer steps): runs that differ in any of these never share a figure. Every figure has
a caption saying what it shows, from which runs and with how many seeds.

The page comes from the Jinja2 template ``analysis/templates/report.html.j2`` (figures embedded as data URIs,
no external resources), its tables from pandas Styler (escaped). Beside it: ``figures/`` (each figure as PNG
and PDF) and ``table.md``, ``table.tex``, ``table.csv``, ``table_long.csv``.

Layers: :func:`load_report_data` reads the files; :func:`build_sections` and :func:`render_page` are pure
(frames in, text and PNG bytes out); only :func:`main` writes.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import jinja2
import pandas as pd
from markupsafe import Markup

from analysis import compare, render
from analysis.figures_adalora import NAME as ADALORA_FIGURE
from analysis.figures_dora import NAME as DORA_FIGURE
from analysis.labels import method_label, method_order_key, metric_label, task_label
from harness.families import MATRIX_TYPES

log = logging.getLogger(__name__)

#: The sections of every report, in page order (ids are HTML anchors). DoRA / AdaLoRA follow when present.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"), ("setup", "Setup"), ("runs", "Runs"), ("comparison", "Comparison"), ("pareto", "Pareto plots"),
    ("curves", "Learning curves"),
)
#: the papers' figures (sections named after the figures: ``figures <name>``)
METHOD_SECTIONS = ((DORA_FIGURE, "DoRA: magnitude vs direction (Figure 2)"), (ADALORA_FIGURE, "AdaLoRA: rank allocation"))
#: A group of runs that may share a figure: same model, task and number of optimizer steps.
GROUP_KEYS = ("model", "task", "steps")


@dataclass
class Figure:
    """One embedded image: a file stem (for the files beside the page), alt text, caption, PNG bytes, and
    the matplotlib figure (kept open for the CLI to save as PDF; None once closed), and the data it draws
    (written beside it as CSV)."""

    stem: str
    alt: str
    caption: str
    png: bytes
    fig: Any = None
    data: Optional[pd.DataFrame] = None


@dataclass
class Block:
    """One piece of a section: a paragraph or note (plain text), a table (HTML from Styler) or a figure."""

    kind: Literal["p", "note", "table", "figure"]
    content: Any


@dataclass
class Section:
    """A block of the page: ``id`` (HTML anchor), title and its blocks, in order."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, kind: Literal["p", "note", "table", "figure"], content: Any) -> None:
        """Append a block."""
        self.blocks.append(Block(kind, content))

    @property
    def figures(self) -> list[Figure]:
        """The figures of this section."""
        return [b.content for b in self.blocks if b.kind == "figure"]


@dataclass
class ReportData:
    """Everything the report shows, loaded: runs (one row per finished run, as
    :func:`analysis.inputs.load_inputs`), runs left out, metrics frames by run, the resolved configuration of
    each harness run, the environments, and the method records (DoRA points, AdaLoRA ranks) when asked."""

    runs: pd.DataFrame
    skipped: list[tuple[Path, str]]
    metrics: dict[str, pd.DataFrame]
    configs: dict[str, dict[str, Any]]
    environment: pd.DataFrame
    dora_points: pd.DataFrame = field(default_factory=pd.DataFrame)
    adalora_ranks: pd.DataFrame = field(default_factory=pd.DataFrame)
    adalora_final: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    spectra: Any = None  # analysis.spectra.SpectraResult of the runs with measurable snapshots


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
    return df.fillna("–").groupby(list(df.columns), sort=False).size().reset_index(name="runs")


def load_report_data(runs: pd.DataFrame, skipped: list[tuple[Path, str]], metrics: dict[str, pd.DataFrame], *,
                     method_figures: bool = True) -> ReportData:
    """Read what the report needs beyond the runs frame: configurations, environments and, with
    ``method_figures``, the DoRA snapshot points (query matrices, recomputed in float64) and the AdaLoRA rank
    records of the runs that have them. Problems with one run's records are logged; the rest goes on."""
    from analysis import decomposition as D
    from analysis import ranks as R
    from analysis.load import load_run_record

    runs = with_steps(runs)
    configs: dict[str, dict[str, Any]] = {}
    harness = runs[runs.get("source", pd.Series("harness", index=runs.index)) == "harness"]
    for rd in harness["run_dir"]:
        try:
            configs[rd] = load_run_record(rd).get("config", {}) or {}
        except (OSError, ValueError) as e:
            log.warning("%s: no configuration (%s)", rd, e)
    data = ReportData(runs, list(skipped), metrics, configs, environment_frame(runs))
    if not method_figures or runs.empty:
        return data
    if not harness.empty:
        table = harness.assign(total_steps=harness["steps"])
        if "lr" not in table:
            table["lr"] = math.nan
        points, problems = D.decomposition_table(table, matrix_type="Wq", source="tensors")
        for p in problems:
            log.info("DoRA figure: %s", p)
        data.dora_points = points
        data.spectra = load_spectra(harness)
        with_ranks = [rd for rd in harness["run_dir"] if R.rank_file(rd).is_file()]
        if with_ranks:
            try:
                data.adalora_ranks = R.load_allocations(with_ranks)
            except (FileNotFoundError, ValueError) as e:
                log.warning("AdaLoRA ranks: %s", e)
    peft = runs[(runs.get("source", pd.Series("harness", index=runs.index)) == "peft")]
    for rd in peft["run_dir"] if not peft.empty else []:  # the files that hold a rank pattern
        try:
            data.adalora_final.append((rd, R.from_peft_json(rd)))
        except (OSError, ValueError, TypeError) as e:
            log.info("%s: no rank pattern (%s)", rd, e)
    return data


def load_spectra(runs: pd.DataFrame) -> Any:
    """The weight-analysis measures (:func:`analysis.spectra.compute`) of the runs that have snapshots; None when
    no run has a measurable one."""
    from analysis import spectra as SP

    dirs = [d for d in runs["run_dir"] if (Path(d) / "snapshots" / "meta.json").is_file()]
    if not dirs:
        return None
    table, problems = SP.load_run_table(dirs)
    res = SP.compute(table)
    for p in problems + res.problems:
        log.info("weight analysis: %s", p)
    return None if res.measures.empty else (res, table)


def with_steps(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a ``steps`` column (optimizer steps run; summary.json's, NaN where unknown)."""
    out = runs.copy()
    if "steps" not in out:
        out["steps"] = math.nan
    out["steps"] = pd.to_numeric(out["steps"], errors="coerce")
    return out


# --------------------------------------------------------------------------------------------- computing

#: Setup rows: (label, where the value comes from: a runs-frame column or a flattened configuration key).
SETUP_FIELDS: tuple[tuple[str, str], ...] = (
    ("Model", "model"), ("Task", "task"), ("Method", "_method"), ("Budget (rank r, AdaLoRA b)", "budget"),
    ("Seed", "seed"), ("Optimizer steps", "steps"), ("Batch size", "train.batch_size"),
    ("Learning rate", "lr"), ("Train examples", "task.max_train_samples"),
    ("Eval examples", "task.max_eval_samples"), ("Validation split of train", "task.validation_fraction"),
    ("Device", "device"), ("Source", "source"),
)
#: Configuration keys the Setup does not list among "other settings that vary" (covered above, or bookkeeping).
_SETUP_SKIP = ("method.", "model.name", "task.name", "train.max_steps", "budget", "seed", "train.lr")


def _plain(v: Any) -> str:
    """A setting's value as text: ``all`` for None, ``0.0005`` for floats, lists joined."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:g}" if not v.is_integer() or abs(v) < 1e6 else f"{int(v)}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def setup_tables(runs: pd.DataFrame, configs: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(common, varying): the settings every run shares (``Setting``, ``Value``) and those that differ
    (``Setting``, ``Values``: each value with its number of runs), from :data:`SETUP_FIELDS` and, for
    harness runs, every other configuration key that differs between runs."""
    flat = {rd: compare.flatten(c) for rd, c in configs.items()}
    per_run: list[dict[str, str]] = []
    for _, r in runs.iterrows():
        cfg = flat.get(r["run_dir"], {})
        row: dict[str, str] = {}
        for label, key in SETUP_FIELDS:
            if key == "_method":
                v: Any = method_label(r["method"], label=r.get("method_label"))
            elif key in runs.columns:
                v = r.get(key)
            else:
                v = cfg.get(key)
                if key.startswith("task.max_") and r["run_dir"] in flat and v is None:
                    v = "all"
            if key == "task":
                v = task_label(v)
            if key in ("budget", "seed", "steps") and v is not None and not pd.isna(v):
                v = int(v)
            row[label] = _plain(v)
        per_run.append(row)
    other = [k for k in sorted({k for c in flat.values() for k in c}) if not k.startswith(_SETUP_SKIP + compare.IGNORED_CONFIG)
             and k not in {key for _, key in SETUP_FIELDS}]
    for k in other:
        vals = {rd: _plain(flat[rd].get(k)) for rd in flat}
        if len(set(vals.values())) > 1:
            for row, rd in zip(per_run, runs["run_dir"]):
                row[k] = vals.get(rd, "–")
    frame = pd.DataFrame(per_run)
    common, varying = [], []
    for col in frame.columns:
        counts = frame[col].value_counts(sort=False)
        if col.startswith(tuple(f"{p}." for p in ("train", "task", "model", "snapshot"))) or "." in col:
            label = f"{col} (configuration)"
        else:
            label = col
        if len(counts) == 1:
            if counts.index[0] != "–":
                common.append({"Setting": label, "Value": counts.index[0]})
        else:
            varying.append({"Setting": label, "Values": "; ".join(f"{v} ({n} run{'s' if n != 1 else ''})"
                                                                  for v, n in counts.items())})
    return pd.DataFrame(common, columns=["Setting", "Value"]), pd.DataFrame(varying, columns=["Setting", "Values"])


def runs_table(runs: pd.DataFrame, skipped: Sequence[tuple[Path, str]], *, digits: int = 4,
               scale: float = 1.0) -> pd.DataFrame:
    """One row per run, used or left out: Run (folder name), Status, Method, Task, Seed, Steps, Score (the
    main metric, final evaluation), Folder (where it lies)."""
    rows = []
    for _, r in runs.iterrows():
        val = r.get("main_metric_value")
        score = ("–" if val is None or pd.isna(val)
                 else f"{metric_label(str(r.get('main_metric')))} {float(val) * scale:.{digits}f}")
        rd = Path(str(r["run_dir"]))
        rows.append({"Run": rd.name, "Status": str(r.get("status") or "done"),
                     "Method": method_label(r["method"], r.get("budget"), r.get("variant", ""),
                                            label=r.get("method_label")),
                     "Task": task_label(r.get("task")), "Seed": _plain(None if pd.isna(r.get("seed")) else int(r["seed"])),
                     "Steps": _plain(None if pd.isna(r.get("steps")) else int(r["steps"])), "Score": score,
                     "Folder": str(rd.parent)})
    for path, why in skipped:
        rows.append({"Run": Path(path).name, "Status": f"left out: {why}", "Method": "–", "Task": "–", "Seed": "–",
                     "Steps": "–", "Score": "–", "Folder": str(Path(path).parent)})
    return pd.DataFrame(rows, columns=["Run", "Status", "Method", "Task", "Seed", "Steps", "Score", "Folder"])


def verdict_table(v: pd.DataFrame, *, digits: int = 4, scale: float = 1.0) -> pd.DataFrame:
    """The papers' claims of :func:`analysis.compare.verdicts` as a display table."""
    rows = []
    for r in v.itertuples(index=False):
        ci = f"[{r.low * scale:+.{digits}f}, {r.high * scale:+.{digits}f}]" if math.isfinite(r.low) else "–"
        rows.append({"Claim": r.claim, "From": r.source, "Task": task_label(r.task),
                     "Budget": _plain(r.budget) + (f" ({r.variant})" if r.variant else ""),
                     "Metric": metric_label(r.metric), "Difference": f"{r.diff * scale:+.{digits}f}", "Interval": ci,
                     "Seeds": f"{r.n_a} paired" if r.paired else f"{r.n_a} vs {r.n_b}", "p": render.fmt_p(r.p),
                     "Holm p": render.fmt_p(r.p_holm), "Verdict": r.verdict,
                     "At ±margin": f"{r.decision} (±{r.margin * scale:g})" + (" (low n)" if r.low_n else "")
                     + (f" ({r.not_learned} not learned)" if r.not_learned else "")})
    return pd.DataFrame(rows, columns=["Claim", "From", "Task", "Budget", "Metric", "Difference", "Interval", "Seeds",
                                       "Verdict"])


def groups(runs: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Groups of comparable runs (:data:`GROUP_KEYS`: model, task, optimizer steps), in table order."""
    r = with_steps(runs)
    keys = [k for k in GROUP_KEYS if k in r]
    out = []
    for vals, g in r.groupby(keys, dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        out.append((dict(zip(keys, vals)), g))
    return out


def group_name(key: dict[str, Any]) -> str:
    """``SST-2, minilm, 300 steps``."""
    steps = key.get("steps")
    return ", ".join([task_label(key.get("task")), str(key.get("model"))]
                     + ([f"{int(steps)} steps"] if steps is not None and not pd.isna(steps) else []))


def seeds_text(ns: Sequence[int]) -> str:
    """``3 seeds each``, ``1 seed each (descriptive: no interval)``, ``1–3 seeds``."""
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "no seeds"
    if len(ns) == 1:
        return f"{ns[0]} seed{'s' if ns[0] != 1 else ''} each" + (" (descriptive: no interval)" if ns[0] == 1 else "")
    return f"{ns[0]}–{ns[-1]} seeds"


def configurations_text(long: pd.DataFrame) -> str:
    """``Full FT, LoRA r=4, LoRA r=8``: the rows of a long table, labelled."""
    return ", ".join(method_label(r["method"], r["budget"], r["variant"], label=r.get("method_label"))
                     for _, r in long.iterrows())


def join_words(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else ""


def title_for(runs: pd.DataFrame) -> str:
    """What the page compares: ``Full FT, LoRA, DoRA and AdaLoRA compared on minilm``."""
    methods = []
    for m, g in runs.groupby("method", sort=False):
        methods.append((m, method_label(m, label=g["method_label"].dropna().iloc[0]
                                        if "method_label" in g and g["method_label"].notna().any() else None)))
    methods.sort(key=lambda t: method_order_key(t[0], runs))
    models = [str(m) for m in dict.fromkeys(runs["model"]) if m is not None and not pd.isna(m)]
    return f"{join_words([lbl for _, lbl in methods])} compared" + (f" on {join_words(models)}" if models else "")


# --------------------------------------------------------------------------------------------- figures

def png_bytes(fig: Any, *, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _figure(fig: Any, stem: str, alt: str, caption: str, keep: bool, data: Optional[pd.DataFrame] = None) -> Figure:
    """Encode ``fig``; close it unless ``keep`` (the CLI saves kept figures as files, then closes them)."""
    import matplotlib.pyplot as plt

    png = png_bytes(fig)
    if not keep:
        plt.close(fig)
    return Figure(stem, alt, caption, png, fig if keep else None, data)


def _slug(*parts: Any) -> str:
    from analysis.table import slug

    return slug("_".join(str(p) for p in parts if p is not None and not (isinstance(p, float) and math.isnan(p))))


def comparison_figures(data: ReportData, *, metric: Optional[str], which: str, kind: str, confidence: float,
                       keep: bool) -> tuple[Section, Section]:
    """Pareto plots and learning curves, one figure per group of comparable runs."""
    from analysis.plots import compare as pc

    par = Section("pareto", "Pareto plots")
    par.add("p", "Each point is one configuration: the metric's mean over seeds (error bars: the table's "
                 "interval; below 3 seeds no interval, each seed's value as an open marker instead) against "
                 "trainable parameters (log scale), train time and peak memory. Circled points lie on the Pareto "
                 "frontier (dashed): no other configuration is better on both axes.")
    cur = Section("curves", "Learning curves")
    cur.add("p", "The evaluation metric after each evaluation step: mean over seeds, band: the interval over "
                 "seeds at that step; below 3 seeds one line per seed instead of a band.")
    for key, g in groups(data.runs):
        long = compare.compare(g, metric=metric, which=which, kind=kind, confidence=confidence)
        if long.empty:
            continue
        name = group_name(key)
        stem = _slug(key.get("model"), key.get("task"), f"{int(key['steps'])}steps" if not pd.isna(key.get("steps")) else None)
        what = f"{metric_label(long['metric'].iloc[0])} on {task_label(key.get('task'))} (dev set)"
        runs_txt = f"{len(g)} runs, {len(long)} configurations ({configurations_text(long)}), {seeds_text(long['n'])}"
        seeds = compare.seed_values(g, metric=metric, which=which)
        fig = pc.pareto_figure(long, task=key.get("task"), model=key.get("model"), seeds=seeds)
        par.add("figure", _figure(fig, f"pareto_{stem}", f"Pareto plots, {name}",
                                  f"{what} against cost; {name}; {runs_txt}.", keep,
                                  pc.pareto_data(long, task=key.get("task"), model=key.get("model"), seeds=seeds)))
        curves = compare.curves(g, data.metrics, metric=metric, kind=kind, confidence=confidence)
        if not curves.empty:
            points = compare.curve_points(g, data.metrics, metric=metric)
            fig = pc.curves_figure(curves, tasks=[key.get("task")], model=key.get("model"), seeds=points)
            cur.add("figure", _figure(fig, f"curves_{stem}", f"Learning curves, {name}",
                                      f"{what} during training; {name}; {runs_txt}.", keep,
                                      pc.curves_data(curves, tasks=[key.get("task")], model=key.get("model"),
                                                     seeds=points)))
    if not cur.figures:
        cur.add("p", "No run logged an evaluation during training.")
    return par, cur


def dora_section(data: ReportData, *, confidence: float, keep: bool) -> Optional[Section]:
    """DoRA's Figure 2 per group of comparable runs: ΔM against ΔD of the query matrices (norms per output
    feature, the paper's axis), with r and slope per run and their mean over seeds."""
    from analysis import decomposition as D
    from analysis.plots.dora import dora_figure

    pts = data.dora_points
    if pts.empty:
        return None
    sec = Section(*METHOD_SECTIONS[0])
    sec.add("p", "ΔM (change of the column norms) against ΔD (change of direction, 1 − cosine) of the query "
                 "matrices at each snapshot, per layer, norms per output feature (the paper's ‖·‖_c); r and "
                 "slope are computed per run over its (layer, checkpoint) points, then averaged over seeds with a "
                 f"{confidence * 100:g}% Student-t interval (r on Fisher's z scale). Two answers per method against "
                 "the paper (DoRA paper, Figure 2: FT −0.62, LoRA +0.83, DoRA −0.31): the sign (agrees / disagrees "
                 "when the Holm-adjusted p of the t-test of r = 0 is below 5%, Holm over the verdicts of the figure; "
                 "else inconclusive) and the value (the paper's r inside the interval or not, with its p).")
    for key, g in groups(data.runs):
        p = pts[pts["run_dir"].isin(set(g["run_dir"]))]
        if p.empty:
            continue
        p = p.assign(panel=D.panels(p))
        stats = D.correlation_table(p, axis="out", confidence=confidence)
        name = group_name(key)
        n_seeds = p["seed"].nunique()
        methods = join_words([D.panel_label(x) for x in D.ordered_panels(p)])
        fig = dora_figure(p, stats, axis="out", suptitle=f"ΔM vs ΔD of Wq, {name}")
        stem = _slug("dora_fig2", key.get("model"), key.get("task"), f"{int(key['steps'])}steps"
                     if not pd.isna(key.get("steps")) else None)
        sec.add("figure", _figure(fig, stem, f"DoRA Figure 2, {name}",
                                  f"ΔM against ΔD of the query matrices, one panel per method ({methods}); {name}; "
                                  f"{p['run_dir'].nunique()} runs, {n_seeds} seed{'s' if n_seeds != 1 else ''}; "
                                  f"{p['layer'].nunique()} layers × {p['checkpoint'].nunique()} checkpoints per run; "
                                  "colour: layer, line: least-squares fit.", keep, p))
        rows = []
        for r in stats.itertuples(index=False):
            iv = (f"{r.pearson:+.2f} [{r.pearson_low:+.2f}, {r.pearson_high:+.2f}]" if math.isfinite(r.pearson_low)
                  else f"{r.pearson:+.2f}")
            rows.append({"Method": D.panel_label(r.panel), "Seeds": str(r.n_seeds), "r (mean over seeds)": iv,
                         "Slope": f"{r.slope:.3g}", "Paper r": "–" if not math.isfinite(r.paper_pearson)
                         else f"{r.paper_pearson:+.2f}", "Sign": r.verdict, "p": render.fmt_p(r.p),
                         "Holm p": render.fmt_p(r.p_holm), "Paper r in the CI": r.value,
                         "p (paper r)": render.fmt_p(r.p_value)})
        sec.add("table", render.render(pd.DataFrame(rows), fmt="html", text=("Sign", "Paper r in the CI"),
                                       caption=f"ΔM vs ΔD, {name} (Holm over the {stats.attrs.get('family', 0)} "
                                               "verdicts of this figure)"))
    return sec if sec.figures else None


#: The budget shares the AdaLoRA table shows: (quantity of :func:`analysis.ranks.allocation_shares`, label,
#: the quantity an equal rank for every matrix would give, or None).
SHARE_ROWS: tuple[tuple[str, str, Optional[str]], ...] = (
    ("ffn_share", "FFN (Wf1, Wf2; a decoder's Wg too): share of the kept rank", "ffn_uniform"),
    ("top_share", "Top third of the layers: share of the kept rank", "top_uniform"),
    ("bottom_share", "Bottom third of the layers: share of the kept rank", "top_uniform"),
    *((f"mean_{t}", f"{t}: mean rank per matrix", None) for t in MATRIX_TYPES),
)


def shares_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The headline rows of :func:`analysis.ranks.summarize_shares` as a display table: quantity, mean over
    seeds, interval, what a uniform allocation would give."""
    rows = []
    for key, label, uniform in SHARE_ROWS:
        if key not in summary.index or not math.isfinite(summary.at[key, "mean"]):
            continue
        r = summary.loc[key]
        rows.append({"Quantity": label, "Mean over seeds": f"{r['mean']:.3g}",
                     "Interval": f"[{r['low']:.3g}, {r['high']:.3g}]" if math.isfinite(r["low"]) else "–",
                     "Seeds": str(int(r["n"])),
                     "If uniform": f"{summary.at[uniform, 'mean']:.3g}" if uniform in summary.index else "–"})
    return pd.DataFrame(rows, columns=["Quantity", "Mean over seeds", "Interval", "Seeds", "If uniform"])


def adalora_section(data: ReportData, *, keep: bool) -> Optional[Section]:
    """AdaLoRA's Figure 3 per condition (task, model, budget, steps; seeds pooled): the final rank of each
    adapted matrix, and the budget shares beside it with the verdict against the paper."""
    from analysis import ranks as R
    from analysis.plots import adalora as P

    conds: list[tuple[str, str, pd.DataFrame]] = []
    if not data.adalora_ranks.empty:
        for label, sub in R.conditions(data.adalora_ranks, ADALORA_FIGURE):
            final = R.final_ranks(sub)
            d = sub.iloc[0]
            steps = int(final["step"].max())
            parts = [task_label(d.get("task")), str(d.get("model"))]
            parts += [f"b={int(d['target_r'])}"] if pd.notna(d.get("target_r")) else []
            name = ", ".join(parts + [f"{steps} steps"])
            conds.append((label, name, final))
    for path, final in data.adalora_final:
        conds.append((Path(path).stem, f"{Path(path).name} (PEFT result)", final))
    if not conds:
        return None
    import matplotlib.pyplot as plt

    sec = Section(*METHOD_SECTIONS[1])
    sec.add("p", "Final rank of each adapted matrix (layer × matrix type, layers counted from 1 at the bottom), "
                 "as the AdaLoRA paper's Figure 3; cells: mean over seeds (± std where several). The table "
                 "below says where the budget went (per run, then the mean over seeds with its interval, beside "
                 "what an equal rank for every matrix would give); the line under it is the verdict against "
                 "the paper (more rank to the FFN matrices and to the top layers).")
    for label, name, final in conds:
        mean, std, n = R.heatmap_table(final)
        shares = R.allocation_shares(final)
        v = R.verdict(shares)
        n_runs = final["run_dir"].nunique() if "run_dir" in final else 1
        fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * mean.shape[1] + 2.5), 0.55 * mean.shape[0] + 1.6),
                               constrained_layout=True)
        P.rank_heatmap(mean, std if n_runs > 1 else None, n if n_runs > 1 else None, ax=ax,
                       title=f"AdaLoRA final ranks, {name}", vmax=float(final["init_r"].max()))
        seeds = f"{n_runs} seed{'s' if n_runs != 1 else ''}" + (" (descriptive: no interval)" if n_runs == 1 else "")
        sec.add("figure", _figure(fig, _slug(ADALORA_FIGURE, label), f"AdaLoRA final ranks, {name}",
                                  f"Final rank per matrix; {name}; {seeds}; initial rank "
                                  f"{int(final['init_r'].max())}.", keep, final))
        sec.add("table", render.render(shares_table(R.summarize_shares(shares)), fmt="html",
                                       caption=f"Where the budget went, {name}"))
        sec.add("note", v["line"])
    return sec


def spectra_section(data: ReportData, *, keep: bool) -> Optional[Section]:
    """The weight analysis (docs/spectra.md) of the runs with measurable snapshots: intruders vs rank, ΔW's
    spectrum, φ to full FT, every measure over training, and each configuration's final values."""
    from analysis import spectra as SP
    from analysis.plots import spectra as P

    if data.spectra is None:
        return None
    res, runs = data.spectra
    runs = runs[runs["run_dir"].isin(set(res.measures["run_dir"]))].reset_index(drop=True)
    per_run = SP.per_run(res.measures)
    sims = SP.similarities(res, runs)
    sec = Section("spectra", "Weights: intruders, ranks, spectra, similarity")
    sec.add("p", "What each method does to the weights, from every snapshot of every tracked matrix: intruder "
                 "dimensions of W against W0 (PEFT's k = 10, ε = 0.5), effective rank (90% of the energy) and stable "
                 "rank of ΔW, amplification factor, ΔW's energy in W0's top-8 subspace, and the subspace similarity "
                 "φ of ΔW between runs. Per run: the mean over its matrices; points: the mean over seeds. Verdicts on "
                 "the papers' claims: python -m analysis figures spectra (docs/spectra.md).")
    n = runs["seed"].nunique()
    figs = [("intruders_vs_rank", "Intruder dimensions vs rank", P.measure_vs(per_run, "intruders", "budget"))
            if per_run["budget"].notna().any() else None,
            ("spectrum", "Spectrum of ΔW", P.spectrum_figure(res.spectrum, runs)),
            ("similarity_reference", "Subspace similarity to full FT",
             P.heatmap_figure(P.similarity_matrix(sims, "reference"), "φ of ΔW to full FT's (same seed)"))
            if (sims["kind"] == "reference").any() else None,
            ("over_steps", "Measures over training", P.steps_figure(res.measures, runs))]
    for stem, alt, (fig, fdata) in (f for f in figs if f is not None):
        sec.add("figure", _figure(fig, f"spectra_{stem}", alt, f"{alt}; {len(runs)} runs, {n} seed"
                                  f"{'s' if n != 1 else ''}.", keep, fdata))
    table = per_run.assign(Configuration=SP.condition_labels(per_run)).groupby("Configuration", sort=False)[
        list(SP.MEASURES)].mean().reset_index()
    sec.add("table", render.render(table.round(4).astype(str), fmt="html", caption="Final values, mean over seeds",
                                   text=tuple(table.columns)))
    return sec


# --------------------------------------------------------------------------------------------- sections

def overview_section(runs: pd.DataFrame, long: pd.DataFrame, *, metric: Optional[str], which: str,
                     confidence: float, keep: bool) -> Section:
    """The page opens on the sweep's one-page figure (:func:`analysis.overview.overview_figure`)."""
    from analysis.overview import overview_figure

    sec = Section("overview", "Overview")
    fig, frame = overview_figure(runs, metric=metric, which=which, confidence=confidence)
    sec.add("figure", _figure(
        fig, "overview", "Overview: metric per configuration, parameters trained, train time",
        f"{len(runs)} runs, {len(long)} configurations, {seeds_text(long['n'])}: per task the metric of each "
        f"configuration (mean over seeds with its {confidence * 100:g}% interval; below 3 seeds each seed), the "
        f"parameters trained and the train time per run — the figure a sweep writes as summary.png", keep, frame))
    return sec


def build_sections(data: ReportData, *, metric: Optional[str] = None, which: str = "final", kind: str = "t",
                   confidence: float = 0.95, digits: int = 4, scale: float = 1.0,
                   keep_figures: bool = False, margin: Optional[float] = None) -> list[Section]:
    """Every section of the report (pure: figures drawn and encoded in memory; with ``keep_figures`` each
    :class:`Figure` keeps its matplotlib figure open for the caller to save and close)."""
    runs = with_steps(data.runs)
    opts = dict(metric=metric, which=which, kind=kind, confidence=confidence)
    long = compare.compare(runs, **opts)
    overview = overview_section(runs, long, metric=metric, which=which, confidence=confidence, keep=keep_figures)

    setup = Section("setup", "Setup")
    common, varying = setup_tables(runs, data.configs)
    tasks = join_words([task_label(t) for t in dict.fromkeys(runs["task"])])
    setup.add("p", f"{len(runs)} finished runs on {tasks}; {len(long)} configurations (model × task × method × "
                   f"budget{' × variant' if long['variant'].astype(bool).any() else ''}), {seeds_text(long['n'])}. "
                   "Scores are on each task's dev set, the reported test set; nothing was selected on it.")
    setup.add("table", render.render(common, fmt="html", caption="Common to every run", text=common.columns))
    if varying.empty:
        setup.add("p", "Nothing else varies between the runs.")
    else:
        setup.add("table", render.render(varying, fmt="html", caption="What varies between the runs",
                                         text=varying.columns))
    mixed = [group_name(k) for k, _ in groups(runs)]
    if len(mixed) > 1:
        setup.add("note", f"The runs form {len(mixed)} groups that are not comparable with each other (model, task "
                          f"or number of steps differ): {'; '.join(mixed)}. Each figure shows one group.")

    run_sec = Section("runs", "Runs")
    run_sec.add("p", f"{len(runs)} runs used" + (f", {len(data.skipped)} left out (not finished or unreadable)."
                                                 if data.skipped else "; none left out."))
    run_sec.add("table", render.render(runs_table(runs, data.skipped, digits=digits, scale=scale), fmt="html",
                                       text=("Run", "Status", "Folder")))

    comp = Section("comparison", "Comparison")
    t, b = render.format_wide(compare.wide(long), kind=kind, digits=digits, scale=scale)
    comp.add("table", render.render(t, b, fmt="html", caption="Methods compared, paper layout (mean over seeds)",
                                    footer=render.notes(long, kind=kind, confidence=confidence, layout="wide",
                                                        scale=scale)))
    v = compare.verdicts(runs, metric=metric, which=which, confidence=confidence, margin=margin)
    if v.empty:
        comp.add("note", "The papers' claims (DoRA > LoRA, AdaLoRA > LoRA at the same budget) need both methods "
                         "on the same task and budget; these runs have no such pair.")
    else:
        comp.add("table", render.render(
            verdict_table(v, digits=digits, scale=scale), fmt="html",
            caption=f"The papers' claims, checked (Holm over the {len(v)} verdicts of this table)",
            text=("Claim", "From", "Verdict", "At ±margin"),
            footer=[f"Difference of means over seeds with its {confidence * 100:g}% t-interval (paired where both "
                    "methods ran the same seeds, else Welch) and the p of the t-test of 0; agrees / disagrees when the "
                    "Holm-adjusted p is below 5% (by the sign), inconclusive otherwise or when the interval has no "
                    "width, descriptive with one seed. 'At ±margin': the four-way decision (better / worse / "
                    "equivalent / undetermined) of the difference at the practical margin."]))
    cons = compare.contrasts(runs, metric=metric, which=which, margin=margin, alpha=1 - confidence)
    if not cons.empty:
        comp.add("table", render.render(render.format_contrasts(cons, digits=digits, scale=scale), fmt="html",
                                        caption=f"Contrasts (Holm over the {len(cons)} contrasts of this table)",
                                        text=("Contrast", "Verdict", "n"), footer=render.contrast_notes(cons)))
    t, b = render.format_long(long, kind=kind, confidence=confidence, digits=digits, scale=scale)
    comp.add("table", render.render(t, b, fmt="html", caption="Per task: interval, seeds and cost",
                                    footer=render.notes(long, kind=kind, confidence=confidence, layout="long",
                                                        scale=scale)))

    par, cur = comparison_figures(data, metric=metric, which=which, kind=kind, confidence=confidence,
                                  keep=keep_figures)
    sections = [overview, setup, run_sec, comp, par, cur]
    for extra in (dora_section(data, confidence=confidence, keep=keep_figures),
                  adalora_section(data, keep=keep_figures), spectra_section(data, keep=keep_figures)):
        if extra is not None:
            sections.append(extra)
    env = Section("environment", "Environment")
    if data.environment.empty:
        env.add("p", "No environment recorded.")
    else:
        env.add("p", "Software and hardware of the runs: one row per distinct environment, with its number of runs.")
        env.add("table", render.render(data.environment.astype(str), fmt="html"))
    sections.append(env)
    return sections


# --------------------------------------------------------------------------------------------- page

def _jinja() -> jinja2.Environment:
    """The template environment: templates from the package, autoescaped; ``b64`` encodes PNG bytes."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env


def render_page(sections: Sequence[Section], *, title: str, subtitle: str = "") -> str:
    """The whole page from ``report.html.j2``: text escaped, tables (Styler HTML) inserted as they are."""
    blocks = [[Block(b.kind, Markup(b.content)) if b.kind == "table" else b
               for b in s.blocks] for s in sections]
    return _jinja().get_template("report.html.j2").render(
        title=title, subtitle=subtitle, sections=[(s, bl) for s, bl in zip(sections, blocks)])


# --------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``report``."""
    from analysis.table import add_common

    p.add_argument("runs", nargs="+", help="run folders, sweep folders, PEFT result files or folders")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: a new ./analysis-report-<time>/; never the input folders)")
    p.add_argument("--title", default=None, help="page title (default: the methods and models compared)")
    add_common(p)
    p.add_argument("--no-method-figures", action="store_true",
                   help="skip the DoRA ΔM/ΔD and AdaLoRA heatmap figures")
    p.add_argument("--wandb", choices=["off", "on", "auto"], default="off",
                   help="put the page and its figures into W&B (a run named report-<group> in the runs' project "
                        "and group, reused by later calls; its files under -o): off (default), on, or auto = when "
                        "the runs were tracked with W&B")


def publish_report(runs: pd.DataFrame, out: Path, page: Path, figures: Sequence[Path], *, force: bool) -> list[str]:
    """The page (as HTML) and its figure PNGs into one ``report-<group>`` W&B run per tracked sweep group
    (:func:`analysis.table.publish_to_sweeps`, offline files under ``out/wandb/``); ``force``: also when no run
    was tracked (offline). Returns the W&B run folders written; never raises."""
    from analysis.table import publish_to_sweeps

    files = {"report/page": page, **{f"report/{f.stem}": f for f in figures}}
    return publish_to_sweeps(runs, out, name="report", force=force, files=files)


def main(args: argparse.Namespace) -> int:
    """Write ``<output>/index.html``, ``figures/`` (PNG + PDF) and ``table.md|tex|csv``; 1 when no finished
    run was found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.outputs import out_folder
    from analysis.table import check_options, load_finished

    check_options(args)
    out = out_folder(args.output, "-o/--output", "report")
    loaded = load_finished(args, "report on")
    if loaded is None:
        return 1
    runs, skipped, metrics, opts = loaded
    scale = 100.0 if args.percent else 1.0
    data = load_report_data(runs, skipped, metrics, method_figures=not args.no_method_figures)
    sections = build_sections(data, digits=args.digits, scale=scale, keep_figures=True, margin=args.margin, **opts)

    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    for fig in (f for s in sections for f in s.figures):
        (figdir / f"{fig.stem}.png").write_bytes(fig.png)
        fig.fig.savefig(figdir / f"{fig.stem}.pdf", bbox_inches="tight")
        plt.close(fig.fig)
        if fig.data is not None:
            fig.data.to_csv(figdir / f"{fig.stem}.csv", index=False)
    for fmt, ext in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
        (out / f"table.{ext}").write_text(render.table_text(runs, fmt=fmt, digits=args.digits, scale=scale, **opts))
    (out / "table_long.csv").write_text(render.table_text(runs, fmt="csv", layout="long", **opts))
    title = args.title or title_for(runs)
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle = f"{len(runs)} runs from {', '.join(str(p) for p in args.runs)} · made {stamp} with {args.command_line}" \
        if hasattr(args, "command_line") else f"{len(runs)} runs · made {stamp}"
    page = out / "index.html"
    page.write_text(render_page(sections, title=title, subtitle=subtitle))
    log.info("wrote %s (%d sections), %s/ and table.md|tex|csv", page, len(sections), figdir)
    print(f"wrote {page}")
    if args.wandb != "off":
        pngs = [figdir / f"{f.stem}.png" for s in sections for f in s.figures]
        for folder in publish_report(runs, out, page, pngs, force=args.wandb == "on"):
            print(f"W&B: {folder}")
    return 0
