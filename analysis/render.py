"""Tables as text: the frames of :mod:`analysis.compare` as display cells (strings, best-cell masks), then
Markdown, LaTeX, HTML (both through pandas Styler) or CSV. Pure: strings in and out, nothing written.

* :func:`format_long`, :func:`format_wide` – display cells and the best-cell mask (bold);
* :func:`notes`, :func:`verdict_lines` – the lines under a table;
* :func:`render` – one display table as Markdown, LaTeX (booktabs), HTML or CSV;
* :func:`table_text` – runs frame → the table as text in one call (what ``python -m analysis table`` prints).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Literal, Optional

import pandas as pd
from markupsafe import escape

from analysis import stats
from analysis.compare import best_mask, compare, contrasts, verdicts, wide
from analysis.labels import MEMORY_KINDS, method_label, metric_label, task_label

Format = Literal["markdown", "latex", "csv", "html"]

#: Columns of the display tables that hold text (left-aligned).
TEXT_COLUMNS = {"Model", "Task", "Method", "Metric", "source", "python", "torch", "transformers", "peft", "harness",
                "device", "platform", "git"}


def fmt_params(n: Any) -> str:
    """``9.18M``, ``332.5K``, ``–`` for missing."""
    if n is None or pd.isna(n):
        return "–"
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def fmt_bytes(b: Any) -> str:
    """``20.8 GiB``."""
    if b is None or pd.isna(b):
        return "–"
    b = float(b)
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if b >= div:
            return f"{b / div:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_num(v: Any, digits: int = 1) -> str:
    """Thousands separators, ``digits`` decimals; ``–`` for missing."""
    if v is None or pd.isna(v):
        return "–"
    return f"{float(v):,.{digits}f}"


def fmt_estimate(mean: float, low: float, high: float, *, kind: str = "t", digits: int = 4, scale: float = 1.0) -> str:
    """``0.4784 ± 0.0123`` (t: symmetric), ``0.4784 [0.4600, 0.4900]`` (bootstrap, or a bounded metric's t-interval,
    asymmetric inside its range), ``0.4784`` (no interval)."""
    if mean is None or pd.isna(mean):
        return "–"
    m = f"{mean * scale:.{digits}f}"
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return m
    if kind == "t" and math.isclose(high - mean, mean - low, rel_tol=1e-6, abs_tol=1e-12):
        return f"{m} ± {(high - low) / 2 * scale:.{digits}f}"
    return f"{m} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def format_long(long: pd.DataFrame, *, kind: str = "t", confidence: float = 0.95, digits: int = 4, scale: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long table as display strings, and the mask of best cells (same shape) for bold marking."""
    models = long["model"].nunique() > 1 if "model" in long else False
    best = best_mask(long)
    kinds = set(",".join(long.get("peak_memory_kind", pd.Series(dtype=str)).dropna()).split(",")) - {""}
    mem_kind = ", ".join(MEMORY_KINDS.get(k, k) for k in sorted(kinds))
    cols: dict[str, list[str]] = {}
    marks: dict[str, list[bool]] = {}
    for i, r in long.iterrows():
        entries = []
        if models:
            entries.append(("Model", str(r["model"]), False))
        entries += [
            ("Task", task_label(r["task"]), False),
            ("Method", method_label(r["method"], r["budget"], r["variant"], label=r.get("method_label")), False),
            ("Metric", metric_label(r["metric"]), False),
            ("Mean", f"{r['mean'] * scale:.{digits}f}", bool(best.at[i, "mean"])),
            (interval_header(kind, confidence), _interval_cell(r, digits, scale), False),
            ("Seeds", str(int(r["n"])), False),
            ("Train s ↓", fmt_num(r.get("train_seconds")), bool(best.at[i, "train_seconds"])),
            ("Tokens/s ↑", fmt_num(r.get("tokens_per_s"), 0), bool(best.at[i, "tokens_per_s"])),
            (f"Peak memory ↓{f' ({mem_kind})' if mem_kind else ''}", fmt_bytes(r.get("peak_memory_bytes")),
             bool(best.at[i, "peak_memory_bytes"])),
            ("Params trained / effective ↓", f"{fmt_params(r.get('trainable_params'))} / {fmt_params(r.get('effective_params'))}",
             bool(best.at[i, "trainable_params"])),
        ]
        for h, v, b in entries:
            cols.setdefault(h, []).append(v)
            marks.setdefault(h, []).append(b)
    return pd.DataFrame(cols), pd.DataFrame(marks)


def interval_header(kind: str, confidence: float = 0.95) -> str:
    """``95% CI (t)``, ``95% CI (bootstrap)``; ``Std`` without an interval."""
    if kind == "none":
        return "Std"
    return f"{confidence * 100:g}% CI ({kind})"


def _interval_cell(r: pd.Series, digits: int, scale: float) -> str:
    if pd.isna(r["low"]):
        if r.get("interval") == "none":
            return "–" if pd.isna(r["std"]) else f"s={r['std'] * scale:.{digits}f}"
        return "– (n=1)" if r["n"] == 1 else "–"
    return f"[{r['low'] * scale:.{digits}f}, {r['high'] * scale:.{digits}f}]"


def format_wide(w: pd.DataFrame, *, kind: str = "t", digits: int = 4, scale: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper layout as display strings and the best-cell mask (bold): ``Method``, ``Params``, one
    column per task headed ``SST-2 (Acc ↑)`` with ``mean ± half-width`` cells, ``Avg``."""
    if w.empty:
        return pd.DataFrame(), pd.DataFrame()
    tasks: list[str] = w.attrs.get("tasks") or [c for c in w.columns if f"{c}_metric" in w]
    models = w["model"].nunique() > 1
    ns = {int(n) for t in tasks for n in w[f"{t}_n"].dropna()}
    one_n = len(ns) == 1
    cols: dict[str, list[str]] = {}
    marks: dict[str, list[bool]] = {}

    def put(h: str, v: str, b: bool = False) -> None:
        cols.setdefault(h, []).append(v)
        marks.setdefault(h, []).append(b)

    headers = {}
    top: dict[str, pd.Series] = {}
    for t in tasks:
        metric = w[f"{t}_metric"].dropna().iloc[0]
        headers[t] = f"{task_label(t)} ({metric_label(metric)})"
        hib = bool(w[f"{t}_hib"].dropna().iloc[0])
        top[t] = pd.Series(False, index=w.index)
        for _, g in w.groupby("model", sort=False):
            top[t].loc[g.index] = stats.top_group(g[t], g[f"{t}_low"], g[f"{t}_high"], higher_is_better=hib)
    for i, r in w.iterrows():
        if models:
            put("Model", str(r["model"]))
        put("Method", method_label(r["method"], r["budget"], r["variant"], label=r.get("method_label")))
        put("Params trained / effective", f"{fmt_params(r['trainable_params'])} / {fmt_params(r['effective_params'])}")
        for t in tasks:
            cell = fmt_estimate(r[t], r[f"{t}_low"], r[f"{t}_high"], kind=kind, digits=digits, scale=scale)
            if not one_n and not pd.isna(r[f"{t}_n"]):
                cell += f" (n={int(r[f'{t}_n'])})"
            put(headers[t], cell, bool(top[t].loc[i]))
        if "avg" in w:
            put(f"Avg {'↑' if w.attrs.get('higher_is_better', True) else '↓'}",
                "–" if pd.isna(r["avg"]) else f"{r['avg'] * scale:.{digits}f}")
    out, m = pd.DataFrame(cols), pd.DataFrame(marks)
    out.attrs["seeds"] = ns.pop() if one_n else None
    return out, m


def notes(long: pd.DataFrame, *, kind: str = "t", confidence: float = 0.95, layout: str = "wide",
          n_resamples: int = 10_000, scale: float = 1.0) -> list[str]:
    """The lines printed under a table: which interval, seeds, directions, what "best" means."""
    out = []
    if layout == "wide":
        if kind == "t":
            out.append(f"Cells: mean over seeds ± half-width of the {stats.describe(kind, confidence=confidence)} "
                       f"([low, high] for bounded metrics, below).")
        elif kind == "bootstrap":
            out.append(f"Cells: mean over seeds [{stats.describe(kind, confidence=confidence, n_resamples=n_resamples)}].")
        else:
            out.append("Cells: mean over seeds (no interval).")
        if long["task"].nunique() > 1:
            out.append("Avg: mean of the task means (rows with every task only; no interval).")
    else:
        out.append(f"Interval: {stats.describe(kind, confidence=confidence, n_resamples=n_resamples)}.")
    if "interval" in long and long["interval"].astype(str).str.startswith("t on ").any():
        out.append("Bounded metrics (accuracy, F1 in [0, 1]; Matthews, Pearson, Spearman in [−1, 1]): the t-interval "
                   "of the mean on the logit scale (Fisher z for [−1, 1]), kept inside the range, shown as [low, high].")
    ns = sorted({int(n) for n in long["n"]}) if not long.empty else []
    if ns:
        out.append(f"Seeds per cell: {ns[0]}" if len(ns) == 1 else f"Seeds per cell: {ns[0]}–{ns[-1]}")
    if 1 in ns:
        out.append("Cells from a single seed have no interval.")
    if ns and ns[-1] > 1:
        out.append(f"↑ higher is better, ↓ lower is better; bold: the best mean and every row whose {confidence * 100:g}% "
                   "interval overlaps it (the data cannot tell them apart)"
                   + ("; costs: the single best measured value." if layout == "long" else "."))
    else:
        out.append("↑ higher is better, ↓ lower is better; one seed per cell: descriptive, no row is marked best.")
    if scale != 1.0:
        out.append(f"Metric values × {scale:g}.")
    out.append("Params: trainable parameters trained / effective (AdaLoRA: after rank pruning)"
               + ("; per row the largest over tasks." if layout == "wide" else "."))
    return out


def verdict_lines(v: pd.DataFrame, *, confidence: float = 0.95, digits: int = 4, scale: float = 1.0) -> list[str]:
    """One line per claim of :func:`analysis.compare.verdicts`, for the notes under a table."""
    out = []
    for r in v.itertuples(index=False):
        ci = (f" [{r.low * scale:+.{digits}f}, {r.high * scale:+.{digits}f}]" if math.isfinite(r.low) else "")
        how = (f"{r.n_a} paired seeds" if r.paired else f"{r.n_a} vs {r.n_b} seeds"
               + (", Welch" if min(r.n_a, r.n_b) > 1 else ""))
        flags = (f"; rests on {r.not_learned} run(s) that did not learn" if r.not_learned else "") + \
                ("; low n" if r.low_n else "")
        out.append(f"Claim {r.claim} ({r.source}), {task_label(r.task)}"
                   f"{'' if not r.model else ' ' + str(r.model)} budget {r.budget}{' ' + r.variant if r.variant else ''}: "
                   f"difference {r.diff * scale:+.{digits}f}{ci} ({how}), p = {fmt_p(r.p)}, Holm p = {fmt_p(r.p_holm)} "
                   f"→ {r.verdict}; at ±{r.margin * scale:g}: {r.decision} (TOST p = {fmt_p(r.p_equiv)}, Holm "
                   f"{fmt_p(getattr(r, 'p_equiv_holm', float('nan')))}){flags}")
    if out:
        out.insert(0, f"Verdicts (Holm over the {len(v)} claims of this table): the difference of means over seeds with "
                      f"its {confidence * 100:g}% t-interval and the p of the t-test of 0; agrees / disagrees when the "
                      "Holm-adjusted p is below 5%, by the sign; else inconclusive (also when every seed gives the same "
                      "difference: a zero-width interval is no evidence); descriptive with one seed. After it the "
                      "four-way decision at the margin (better / worse / equivalent / undetermined), Holm over the "
                      "same claims' p and TOST p (docs/comparing.md).")
    return out


def fmt_p(p: Any) -> str:
    """``0.012``, ``<0.001``, ``–`` for missing."""
    if p is None or pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


#: What each four-way verdict says in words (no "matches" or "no better" without *equivalent*).
VERDICT_WORDS = {"better": "better", "worse": "worse", "equivalent": "equivalent within the margin",
                 "undetermined": "undetermined (neither a difference nor equivalence shown)",
                 "descriptive": "not tested (fewer than 2 seeds)"}


def format_contrasts(c: pd.DataFrame, *, digits: int = 4, scale: float = 1.0) -> pd.DataFrame:
    """The contrasts of :func:`analysis.compare.contrasts` as display strings."""
    models = c["model"].nunique() > 1 if "model" in c else False
    rows = []
    for r in c.itertuples(index=False):
        ci = f"[{r.low * scale:+.{digits}f}, {r.high * scale:+.{digits}f}]" if math.isfinite(r.low) else "–"
        row = {"Model": str(r.model)} if models else {}
        row.update({"Task": task_label(r.task), "Contrast": r.contrast, "Metric": metric_label(r.metric),
                    "Difference": f"{r.difference * scale:+.{digits}f}", "95% CI": ci, "p": fmt_p(r.p),
                    "Holm p": fmt_p(r.p_holm), "TOST p": fmt_p(r.p_equiv), "Holm TOST p": fmt_p(r.p_equiv_holm),
                    "Margin": f"±{r.margin * scale:g}", "n": f"{r.n} {'pairs' if r.paired else 'seeds/side (Welch)'}",
                    "Verdict": r.verdict + (" (low n)" if r.low_n else "")
                    + (f" ({r.not_learned} not learned)" if r.not_learned else "")})
        rows.append(row)
    return pd.DataFrame(rows)


def contrast_notes(c: pd.DataFrame) -> list[str]:
    """The lines under the contrasts table: the family, the tests, the flags."""
    out = [f"Contrasts: Holm over the {len(c)} contrasts of this table (each contrast's p and TOST p: one family of "
           f"{2 * len(c)} hypotheses). Difference a − b: paired t over per-seed differences where both sides ran the "
           "same seeds (same seed, same data order), else Welch's t. Verdict from the Holm p's: equivalent when the "
           "TOST p < 5% (the 90% interval inside ±margin), else better / worse when the p of 'no difference' < 5%, "
           "else undetermined."]
    if "low_n" in c and c["low_n"].any():
        out.append("low n: fewer seeds than this contrast needs to decide at its margin with 80% power "
                   "(`python -m analysis seeds` says how many).")
    if "not_learned" in c and c["not_learned"].any():
        out.append("not learned: the contrast rests on runs whose dev metric is within chance (docs/comparing.md); "
                   "its verdict says nothing about the methods.")
    return out


def render(table: pd.DataFrame, best: Optional[pd.DataFrame] = None, *, fmt: Format = "markdown",
           footer: Iterable[str] = (), caption: Optional[str] = None, text: Iterable[str] = ()) -> str:
    """Display table → text: Markdown (pipes), LaTeX (booktabs) or HTML (pandas Styler, escaped), or CSV;
    best cells bold. HTML: ``<table class="cmp">`` with ``td.best`` / ``.txt`` classes (the page's CSS
    styles them), the footer as ``<p class="note">`` lines. ``text``: more columns that hold text (left-aligned,
    besides :data:`TEXT_COLUMNS`)."""
    best = best if best is not None else pd.DataFrame(False, index=table.index, columns=table.columns)
    text_cols = TEXT_COLUMNS | set(text)
    footer = list(footer)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        return _markdown(table, best, footer, caption, text_cols)
    if fmt == "latex":
        return _latex(table, best, footer, caption, text_cols)
    if fmt == "html":
        return _html(table, best, footer, caption, text_cols)
    raise ValueError(f"unknown format {fmt!r}; use markdown, latex, csv or html")


def _markdown(table: pd.DataFrame, best: pd.DataFrame, footer: list[str], caption: Optional[str],
              text_cols: set[str]) -> str:
    """Pipe table. Kept by hand: Styler writes no Markdown, and ``DataFrame.to_markdown`` (tabulate) can
    neither bold single cells nor right-align some columns only."""
    def cell(v: str, b: bool) -> str:
        v = str(v).replace("|", "\\|")
        return f"**{v}**" if b else v
    lines = []
    if caption:
        lines += [f"**{caption}**", ""]
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in table.columns) + " |")
    lines.append("|" + "|".join("---" if c in text_cols else "---:" for c in table.columns) + "|")
    for i in range(len(table)):
        lines.append("| " + " | ".join(cell(table.iat[i, j], bool(best.iat[i, j])) for j in range(table.shape[1])) + " |")
    if footer:
        lines += [""] + [f"{f}  " for f in footer]
    return "\n".join(lines) + "\n"


def _latex(table: pd.DataFrame, best: pd.DataFrame, footer: list[str], caption: Optional[str],
           text_cols: set[str]) -> str:
    """booktabs table through Styler; best cells ``\\textbf{…}``; caption = caption + footer."""
    styler = (table.style.hide(axis="index")
              .format(latex_escape).format_index(latex_escape, axis=1)
              .apply(lambda _: best.map(lambda b: "textbf: --rwrap;" if b else "").to_numpy(), axis=None))
    cap = " ".join([caption or ""] + footer).strip()
    return styler.to_latex(column_format="".join("l" if c in text_cols else "r" for c in table.columns),
                           position="t", position_float="centering", hrules=True, environment="table",
                           caption=latex_escape(cap) if cap else None)


def _html(table: pd.DataFrame, best: pd.DataFrame, footer: list[str], caption: Optional[str],
          text_cols: set[str]) -> str:
    """``<table class="cmp">`` through Styler (cells and headers HTML-escaped), notes after it."""
    txt = [c in text_cols for c in table.columns]
    classes = pd.DataFrame([[" ".join(k for k, on in (("txt", txt[j]), ("best", bool(best.iat[i, j]))) if on)
                             for j in range(table.shape[1])] for i in range(len(table))],
                           index=table.index, columns=table.columns)
    # a stable id per table: Styler prefixes its element ids with it, and two tables on one page must differ
    uuid = hashlib.sha1(table.to_csv().encode() + (caption or "").encode()).hexdigest()[:10]
    styler = (table.style.hide(axis="index").format(escape="html").format_index(escape="html", axis=1)
              .set_td_classes(classes).set_table_attributes('class="cmp"').set_uuid(uuid)
              .set_table_styles({c: [{"selector": "th", "props": "text-align: left"}]
                                 for c, t in zip(table.columns, txt) if t}, overwrite=False))
    if caption:
        styler = styler.set_caption(str(escape(caption)))
    notes_html = "".join(f'<p class="note">{escape(f)}</p>' for f in footer)
    return styler.to_html() + notes_html + "\n"


#: LaTeX for the characters the tables use. One map for cells, headers and the caption: pandas'
#: ``escape="latex"`` leaves ±, ↑, ↓, × as they are, and pdflatex stops at them.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
          "↓": r"$\downarrow$", "–": "--", "−": "$-$", "·": r"$\cdot$", "×": r"$\times$", "√": r"$\sqrt{}$"}


def latex_escape(s: Any) -> str:
    """``s`` as LaTeX text: TeX's special characters escaped, ±, ↑, ↓, –, −, ·, ×, √ as LaTeX (:data:`_LATEX`)."""
    return "".join(_LATEX.get(ch, ch) for ch in str(s))


#: columns of the per-run CSV (``table --layout runs``) besides every ``eval/``, ``best/`` and ``valid/`` metric
RUN_COLUMNS = ("run_dir", "config_hash", "model", "task", "method", "method_label", "method_color", "budget",
               "variant", "seed", "status", "main_metric", "main_metric_value", "best_selected_on", "steps", "lr",
               "lr_scale", "trainable_params", "effective_params", "train_seconds", "tokens_per_s",
               "peak_memory_bytes", "peak_memory_kind", "dev_majority_rate", "dev_examples", "source")


def runs_csv(runs: pd.DataFrame) -> str:
    """The per-run values every table, contrast and verdict is computed from, one row per run, as CSV;
    ``python -m analysis table <this file>`` reads it back (:func:`analysis.inputs.load_inputs`) and re-derives
    the tables from it alone."""
    metric_cols = sorted(c for c in runs.columns if c.startswith(("eval/", "best/", "valid/")))
    cols = [c for c in RUN_COLUMNS if c in runs.columns] + metric_cols
    return runs[cols].to_csv(index=False)


def table_text(runs: pd.DataFrame, *, layout: Literal["wide", "long", "runs"] = "wide", fmt: Format = "markdown",
               metric: Optional[str] = None, which: Literal["final", "best"] = "final",
               kind: stats.IntervalKind = "t", confidence: float = 0.95, digits: int = 4, scale: float = 1.0,
               n_resamples: int = 10_000, margin: Optional[float] = None, bound: Any = None) -> str:
    """Runs frame → the table as text in one call (what ``python -m analysis table`` prints).

    CSV holds the numbers (long: ``row`` = ``configuration``: one row per configuration with mean, low, high,
    n, cost columns, ``not_learned`` and ``best``; ``row`` = ``contrast``: one row per contrast of
    :func:`analysis.compare.contrasts`, the columns of :data:`analysis.compare.CONTRAST_COLUMNS`; wide: the
    :func:`wide` frame), Markdown/LaTeX/HTML the formatted cells, the long layout with the contrasts table
    after it. ``margin``: the practical margin of every contrast (default per metric); ``bound``: a sequential
    sweep's boundary (:func:`analysis.sequential.boundary`), for its contrasts' repeated p's and printed interval.
    """
    if layout == "runs":
        return runs_csv(runs)
    long = compare(runs, metric=metric, which=which, kind=kind, confidence=confidence, n_resamples=n_resamples)
    cons = contrasts(runs, metric=metric, which=which, margin=margin, alpha=1 - confidence, bound=bound) \
        if layout == "long" else None
    if fmt == "csv":
        if layout == "long":
            out = long.copy()
            out["best"] = best_mask(long)["mean"]
            out = pd.concat([out.assign(row="configuration"), cons.assign(row="contrast")], ignore_index=True)
            out = out[["row"] + [c for c in out.columns if c != "row"]]
        else:
            out = wide(long)
            out = out.drop(columns=[c for c in out.columns if c.endswith("_hib")])
        for c in ("trainable_params", "effective_params", "peak_memory_bytes"):
            if c in out:
                out[c] = pd.to_numeric(out[c], errors="coerce").round().astype("Int64")
        return out.to_csv(index=False)
    if layout == "long":
        t, b = format_long(long, kind=kind, confidence=confidence, digits=digits, scale=scale)
    else:
        t, b = format_wide(wide(long), kind=kind, digits=digits, scale=scale)
    footer = notes(long, kind=kind, confidence=confidence, layout=layout, n_resamples=n_resamples, scale=scale)
    footer += verdict_lines(verdicts(runs, metric=metric, which=which, confidence=confidence, margin=margin),
                            confidence=confidence, digits=digits, scale=scale)
    text = render(t, b, fmt=fmt, footer=footer)
    if cons is not None and not cons.empty:
        text += "\n" + render(format_contrasts(cons, digits=digits, scale=scale), fmt=fmt,
                              footer=contrast_notes(cons), text=("Contrast", "Verdict", "n"),
                              caption=f"Contrasts (Holm over the {len(cons)} contrasts of this table)")
    return text
