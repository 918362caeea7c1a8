"""Methods compared: runs → one row per (model, task, method, budget, variant) with an interval over seeds.

The input is a runs frame as :func:`analysis.load.load_runs` returns it (or
:func:`analysis.peft_format.load_peft_results`, which maps PEFT result files to the same columns): one
row per run with ``model, task, method, budget, seed, main_metric, eval/<metric>, trainable_params,
effective_params, train_seconds, tokens_per_s, peak_memory_bytes``.

* :func:`compare` – the long table: metric mean, interval, seeds, cost columns;
* :func:`wide` – the paper layout (AdaLoRA Table 1): rows method × budget, one column per task + average;
* :func:`best_mask`, :func:`pareto_front` – what is best / not dominated;
* :func:`curves` – learning curves (eval metric per step, mean and interval over seeds);
* :func:`format_long`, :func:`format_wide`, :func:`render` – Markdown, LaTeX, CSV and HTML text.

Everything here maps DataFrames to DataFrames or strings; nothing writes files.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from analysis import stats
from harness.metrics import METRICS

log = logging.getLogger(__name__)

Format = Literal["markdown", "latex", "csv", "html"]

#: Identity of one compared configuration (a table row of the long layout).
KEYS = ["model", "task", "method", "budget", "variant"]

#: Cost columns of the long table and their direction (True: higher is better).
COSTS: dict[str, bool] = {
    "train_seconds": False,
    "tokens_per_s": True,
    "peak_memory_bytes": False,
    "trainable_params": False,
    "effective_params": False,
}

METHOD_ORDER = ["full", "lora", "dora", "adalora"]
TASK_ORDER = ["mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb"]
METHOD_LABELS = {"full": "Full FT", "lora": "LoRA", "dora": "DoRA", "adalora": "AdaLoRA"}
TASK_LABELS = {"sst2": "SST-2", "rte": "RTE", "mrpc": "MRPC", "cola": "CoLA", "stsb": "STS-B",
               "qnli": "QNLI", "qqp": "QQP", "mnli": "MNLI", "metamathqa": "MetaMathQA"}
#: Columns of the display tables that hold text (left-aligned).
TEXT_COLUMNS = {"Model", "Task", "Method", "Metric", "source", "python", "torch", "transformers", "peft", "harness",
                "device", "platform", "git"}
MEMORY_KINDS = {"cuda_max_allocated": "CUDA max allocated", "cpu_max_rss": "CPU max RSS",
                "accelerator_memory_max": "accelerator max"}
METRIC_LABELS = {"accuracy": "Acc", "f1": "F1", "matthews": "Mcc", "pearson": "Pearson",
                 "spearman": "Spearman", "pearson_spearman": "Corr", "mse": "MSE", "loss": "Loss",
                 "forgetting": "Forgetting"}

# Configuration keys that never make two runs different configurations (besides the seed).
_IGNORED_CONFIG = ("seed", "tracking.", "train.progress", "train.device", "task.glue_dir", "train.save_model")


# --------------------------------------------------------------------------------------------- directions

def higher_is_better(name: str) -> bool:
    """Direction of a metric or cost column (``eval/accuracy``, ``best/loss``, ``train_seconds``…).

    Metrics registered in :data:`harness.metrics.METRICS` carry their own direction; losses, errors,
    times, memory and parameter counts are lower-is-better; anything else higher-is-better.
    """
    base = name.split("/")[-1]
    for prefix in ("test_", "valid_", "eval_"):
        base = base.removeprefix(prefix)
    if base in METRICS:
        return METRICS[base].higher_is_better
    if base in COSTS:
        return COSTS[base]
    if base == "pearson_spearman":
        return True
    lower = ("loss", "mse", "error", "perplexity", "seconds", "time", "memory", "bytes", "params", "forgetting")
    return not any(w in base for w in lower)


def arrow(name: str) -> str:
    """``↑`` when higher is better, else ``↓``."""
    return "↑" if higher_is_better(name) else "↓"


# --------------------------------------------------------------------------------------------- variants

def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"train.lr": …}`` (lists become tuples so that they compare and hash)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def with_variants(runs: pd.DataFrame, configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Add a ``variant`` column: the configuration keys (besides seed and tracking) in which runs of one
    (model, task, method, budget) differ, as ``"method.lr=0.001"``; ``""`` where they do not differ.

    ``configs`` maps ``run_dir`` to the run's resolved configuration (nested or flat); runs without one
    keep their ``variant`` (or get ``""``).
    """
    out = runs.copy()
    if "variant" not in out:
        out["variant"] = ""
    out["variant"] = out["variant"].fillna("")
    flat = {rd: flatten(c) for rd, c in configs.items()}
    group_keys = [k for k in ("model", "task", "method", "budget") if k in out]
    for _, g in out.groupby(group_keys, dropna=False, sort=False):
        dirs = [rd for rd in g.get("run_dir", []) if rd in flat]
        if len(dirs) < 2:
            continue
        keys = sorted(set().union(*(flat[rd] for rd in dirs)))
        differ = [k for k in keys if not k.startswith(_IGNORED_CONFIG) and k != "seed"
                  and len({repr(flat[rd].get(k)) for rd in dirs}) > 1]
        if not differ:
            continue
        for idx, rd in zip(g.index, g["run_dir"]):
            if rd in flat:
                out.at[idx, "variant"] = ",".join(f"{k}={_short(flat[rd].get(k))}" for k in differ)
    return out


def _short(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


class DuplicateRunError(ValueError):
    """Two inputs claim the same run (configuration hash) but report different results; names both."""


def one_count(runs: pd.DataFrame) -> pd.DataFrame:
    """Count every run once, whatever the input formats it came in.

    A run's identity is its configuration hash (harness run folders record it in run.json; files exported
    with ``export-peft`` carry it in ``harness_info``; files without one are their own identity). Rows of
    one identity that report the same seed and main metric are one run read twice (a folder and its
    export; the harness folder is kept). Rows of one identity with different results are two runs claiming
    the same identity: :class:`DuplicateRunError` naming both."""
    if runs.empty or "config_hash" not in runs:
        return runs
    ident = runs["config_hash"].where(runs["config_hash"].notna(), runs.get("run_dir"))
    order = runs.assign(_id=ident, _h=(runs.get("source", pd.Series("harness", index=runs.index)) != "harness"))
    keep: list[Any] = []
    for _, g in order.sort_values("_h", kind="stable").groupby("_id", sort=False, dropna=False):
        first = g.iloc[0]
        for _, other in g.iloc[1:].iterrows():
            same = (other.get("seed") == first.get("seed")
                    and _close(other.get("main_metric_value"), first.get("main_metric_value")))
            if not same:
                raise DuplicateRunError(
                    f"{first.get('run_dir')} and {other.get('run_dir')} claim the same run (config hash "
                    f"{first['_id']}) but report different results (seed {first.get('seed')} vs {other.get('seed')}, "
                    f"{first.get('main_metric')} {first.get('main_metric_value')} vs {other.get('main_metric_value')}); "
                    "pass only one of them")
            log.info("%s is %s read again; counted once", other.get("run_dir"), first.get("run_dir"))
        keep.append(g.index[0])
    return runs.loc[sorted(keep)]


def _close(a: Any, b: Any) -> bool:
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------------------------- tables

class SelectionError(ValueError):
    """``which="best"`` on runs whose best step was chosen on the reported set (no validation split)."""


def check_best_selection(runs: pd.DataFrame) -> None:
    """``best/<metric>`` may be reported only where the best step was chosen on a validation split carved
    from the training data (``best_selected_on: validation`` in summary.json); SelectionError otherwise."""
    chosen = runs.get("best_selected_on", pd.Series(None, index=runs.index))
    bad = runs.loc[chosen.fillna("test") != "validation", "run_dir"] if "run_dir" in runs else runs.index
    if len(bad):
        raise SelectionError(
            f"--best: {len(bad)} of {len(runs)} runs chose their best step on the reported dev set (no validation "
            f"split), e.g. {bad.iloc[0]}; re-run them with task.validation_fraction=0.1 (the `compare` preset does), "
            "or report the final evaluation (drop --best)")


def _metric_column(runs: pd.DataFrame, metric: Optional[str], which: str) -> tuple[pd.Series, pd.Series]:
    """Per run: the metric's name and value (``metric=None``: each task's main metric). ``which="best"``:
    the dev metric at the step the validation split chose (see :func:`check_best_selection`)."""
    if which == "best":
        check_best_selection(runs)
    prefix = "best/" if which == "best" else "eval/"
    names = runs["main_metric"] if metric is None else pd.Series(metric, index=runs.index)
    values = []
    for idx, name in names.items():
        col = f"{prefix}{name}"
        v = runs.at[idx, col] if col in runs else math.nan
        if (v is None or pd.isna(v)) and which == "final" and metric is None and "main_metric_value" in runs:
            v = runs.at[idx, "main_metric_value"]
        values.append(np.nan if v is None else float(v))
    return names, pd.Series(values, index=runs.index, dtype=float)


def _order_key(df: pd.DataFrame) -> pd.DataFrame:
    """Sort rows: model, task, method (full, lora, dora, adalora, then a-z), budget (none first), variant."""
    d = df.copy()
    d["_m"] = d["method"].map(lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), str(m)))
    d["_b"] = d["budget"].map(lambda b: -1 if b is None or pd.isna(b) else float(b))
    by = ["_m", "_b"] + (["variant"] if "variant" in d else [])
    if "task" in d:
        d["_t"] = d["task"].map(task_order_key)
        by = ["_t"] + by
    if "model" in d:
        by = ["model"] + by
    return d.sort_values(by, kind="stable").drop(columns=[c for c in ("_m", "_b", "_t") if c in d]).reset_index(drop=True)


def task_order_key(task: Any) -> tuple[int, str]:
    """GLUE tasks in the order of the AdaLoRA / LoRA papers' tables, other tasks after them, a-z."""
    t = str(task).lower()
    return (TASK_ORDER.index(t), t) if t in TASK_ORDER else (len(TASK_ORDER), t)


def per_run_values(runs: pd.DataFrame, *, metric: Optional[str] = None,
                   which: Literal["final", "best"] = "final") -> pd.DataFrame:
    """The runs with every key of :data:`KEYS` present (variant and model as strings, budget None when
    missing), ``metric`` (its name) and ``_value`` (the run's value); runs without a value are dropped."""
    r = runs.copy()
    for k in KEYS:
        if k not in r:
            r[k] = "" if k == "variant" else None
    r["variant"] = r["variant"].fillna("")
    r["budget"] = r["budget"].astype(object).where(r["budget"].notna(), None)
    r["model"] = r["model"].fillna("")
    r["metric"], r["_value"] = _metric_column(r, metric, which)
    return r[r["_value"].notna()]


def compare(runs: pd.DataFrame, *, metric: Optional[str] = None, which: Literal["final", "best"] = "final",
            kind: stats.IntervalKind = "t", confidence: float = 0.95, n_resamples: int = 10_000) -> pd.DataFrame:
    """The long table: one row per (model, task, method, budget, variant).

    Columns: the keys; ``metric`` (its name) and ``higher_is_better``; ``mean, low, high, std, n`` of the
    metric over seeds (``low``/``high`` NaN for one seed); ``seeds`` (sorted, comma-separated); the cost
    columns of :data:`COSTS` (means over seeds); ``peak_memory_kind``; ``interval`` (which interval).
    ``metric=None`` takes each task's main metric; ``which="best"`` the best eval instead of the final one.
    """
    if runs.empty:
        return pd.DataFrame(columns=KEYS + ["metric", "higher_is_better", "mean", "low", "high", "std", "n", "seeds"])
    r = per_run_values(runs, metric=metric, which=which)
    rows = []
    for key, g in r.groupby(KEYS + ["metric"], dropna=False, sort=False):
        iv = stats.interval(g["_value"], kind=kind, confidence=confidence, n_resamples=n_resamples)
        row: dict[str, Any] = dict(zip(KEYS + ["metric"], key))
        row["budget"] = None if row["budget"] is None or pd.isna(row["budget"]) else int(row["budget"])
        row.update(higher_is_better=higher_is_better(row["metric"]), mean=iv.mean, low=iv.low, high=iv.high,
                   std=iv.std, n=iv.n, interval=iv.method,
                   seeds=",".join(str(int(s)) for s in sorted(g["seed"].dropna())) if "seed" in g else "")
        for c in COSTS:
            row[c] = float(pd.to_numeric(g[c], errors="coerce").mean()) if c in g else math.nan
        if "peak_memory_kind" in g:
            kinds = sorted(set(g["peak_memory_kind"].dropna()))
            row["peak_memory_kind"] = ",".join(kinds)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["budget"] = _int_or_none(out["budget"])
    return _order_key(out)


#: Directional claims of the papers, (a, b, source): "a scores higher than b at the same budget".
PAPER_CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("dora", "lora", "DoRA paper"),
    ("adalora", "lora", "AdaLoRA paper"),
)


def verdicts(runs: pd.DataFrame, *, metric: Optional[str] = None, which: Literal["final", "best"] = "final",
             confidence: float = 0.95) -> pd.DataFrame:
    """The papers' method-vs-method claims (:data:`PAPER_CLAIMS`) checked on these runs, seeds as the unit.

    One row per (model, task, budget, variant, claim) where both methods ran: ``diff`` = mean(a) − mean(b)
    of the metric over seeds with its interval (``paired`` t over per-seed differences when both ran the
    same seeds, else Welch), ``n_a``, ``n_b``, and ``verdict``: agrees / disagrees / inconclusive by whether
    the interval excludes 0 on the claimed side (lower-is-better metrics flip the side); descriptive with
    fewer than two seeds a side."""
    cols = ["model", "task", "budget", "variant", "claim", "source", "metric", "a", "b", "diff", "low", "high",
            "n_a", "n_b", "paired", "verdict"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    r = per_run_values(runs, metric=metric, which=which)
    r = r[r["budget"].notna()]
    rows = []
    for key, g in r.groupby(["model", "task", "budget", "variant", "metric"], dropna=False, sort=False):
        for a, b, source in PAPER_CLAIMS:
            ga, gb = g[g["method"] == a], g[g["method"] == b]
            if ga.empty or gb.empty:
                continue
            sa, sb = ga.set_index("seed")["_value"], gb.set_index("seed")["_value"]
            paired = len(sa) > 1 and sorted(sa.index) == sorted(sb.index)
            iv = (stats.difference(sa.sort_index(), sb.sort_index(), confidence=confidence, paired=True) if paired
                  else stats.difference(sa, sb, confidence=confidence))
            sign = 1.0 if higher_is_better(key[4]) else -1.0
            rows.append({"model": key[0], "task": key[1], "budget": int(key[2]), "variant": key[3],
                         "claim": f"{METHOD_LABELS.get(a, a)} > {METHOD_LABELS.get(b, b)}", "source": source,
                         "metric": key[4], "a": a, "b": b, "diff": iv.mean, "low": iv.low, "high": iv.high,
                         "n_a": len(sa), "n_b": len(sb), "paired": paired, "verdict": stats.verdict(iv, sign)})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["model", "task", "budget"], key=lambda c: c.map(task_order_key) if c.name == "task" else c,
                           kind="stable").reset_index(drop=True) if not out.empty else out


def verdict_lines(v: pd.DataFrame, *, confidence: float = 0.95, digits: int = 4, scale: float = 1.0) -> list[str]:
    """One line per claim of :func:`verdicts`, for the notes under a table."""
    out = []
    for r in v.itertuples(index=False):
        ci = (f" [{r.low * scale:+.{digits}f}, {r.high * scale:+.{digits}f}]" if math.isfinite(r.low) else "")
        how = (f"{r.n_a} paired seeds" if r.paired else f"{r.n_a} vs {r.n_b} seeds"
               + (", Welch" if min(r.n_a, r.n_b) > 1 else ""))
        out.append(f"Claim {r.claim} ({r.source}), {task_label(r.task)}"
                   f"{'' if not r.model else ' ' + str(r.model)} budget {r.budget}{' ' + r.variant if r.variant else ''}: "
                   f"difference {r.diff * scale:+.{digits}f}{ci} ({how}) → {r.verdict}")
    if out:
        out.insert(0, f"Verdicts: the difference of means over seeds with its {confidence * 100:g}% t-interval; agrees / "
                      "disagrees when the interval lies wholly on one side of 0, else inconclusive (also when every seed gives the "
                      "same difference: a zero-width interval is no evidence); descriptive with one seed.")
    return out


def _int_or_none(s: pd.Series) -> pd.Series:
    """Budgets as Python ints, None where missing (object dtype: no 8.0, no NaN in labels)."""
    return pd.Series([None if b is None or pd.isna(b) else int(b) for b in s], index=s.index, dtype=object)


def best_mask(long: pd.DataFrame, columns: Sequence[str] = ("mean", *COSTS)) -> pd.DataFrame:
    """Booleans, same index as ``long``, marking what is best within each (model, task).

    ``mean`` (the score): the best mean and every row whose interval over seeds overlaps the best row's
    (:func:`analysis.stats.top_group`): rows that the data cannot tell apart from the best; nothing is marked
    when the best row has no interval (one seed). Cost columns (measured, no interval): the single best value
    (direction from :data:`COSTS`)."""
    mask = pd.DataFrame(False, index=long.index, columns=list(columns))
    if long.empty:
        return mask
    group = [c for c in ("model", "task") if c in long]
    for _, g in long.groupby(group, dropna=False, sort=False):
        for c in columns:
            if c not in g:
                continue
            if c == "mean":
                mask.loc[g.index, c] = stats.top_group(g["mean"], g["low"], g["high"],
                                                       higher_is_better=bool(g["higher_is_better"].iloc[0]))
                continue
            vals = pd.to_numeric(g[c], errors="coerce")
            if vals.notna().sum() == 0:
                continue
            hib = COSTS.get(c, True)
            target = vals.max() if hib else vals.min()
            mask.loc[g.index[np.isclose(vals.fillna(np.inf if not hib else -np.inf), target)], c] = True
    return mask


def wide(long: pd.DataFrame, *, average: bool = True) -> pd.DataFrame:
    """The paper layout: one row per (model, method, budget, variant); per task the columns
    ``<task>`` (mean), ``<task>_low``, ``<task>_high``, ``<task>_n``, ``<task>_metric``; ``trainable_params``
    and ``effective_params`` (the largest over tasks: heads differ slightly); ``avg``: the mean of the
    task means, only for rows that have every task and only when all task metrics share a direction.
    """
    if long.empty:
        return pd.DataFrame()
    tasks = sorted(dict.fromkeys(long["task"]), key=task_order_key)
    rows: dict[tuple, dict[str, Any]] = {}
    rkeys = ["model", "method", "budget", "variant"]
    for _, r in long.iterrows():
        k = tuple(r[c] for c in rkeys)
        row = rows.setdefault(k, {**dict(zip(rkeys, k)), "trainable_params": math.nan, "effective_params": math.nan})
        t = r["task"]
        row.update({t: r["mean"], f"{t}_low": r["low"], f"{t}_high": r["high"], f"{t}_n": r["n"],
                    f"{t}_metric": r["metric"], f"{t}_hib": bool(r["higher_is_better"])})
        for p in ("trainable_params", "effective_params"):
            row[p] = np.nanmax([row[p], r.get(p, math.nan)]) if not pd.isna(r.get(p, math.nan)) else row[p]
    out = pd.DataFrame(list(rows.values()))
    out["budget"] = _int_or_none(out["budget"])
    directions = {bool(h) for h in long["higher_is_better"]}
    if average and len(tasks) > 1 and len(directions) == 1:
        means = out[tasks]
        out["avg"] = means.mean(axis=1).where(means.notna().all(axis=1))
    out = _order_key(out)
    out.attrs["tasks"] = tasks
    out.attrs["higher_is_better"] = directions.pop() if len(directions) == 1 else None
    return out


def pareto_front(x: Sequence[float], y: Sequence[float], *, x_lower: bool = True, y_higher: bool = True) -> np.ndarray:
    """Boolean mask of the points no other point dominates (at least as good in x and y, better in one).
    NaN points are never on the front."""
    xs = np.asarray(x, dtype=float) * (1 if x_lower else -1)
    ys = np.asarray(y, dtype=float) * (-1 if y_higher else 1)  # both: lower is better now
    ok = np.isfinite(xs) & np.isfinite(ys)
    front = np.zeros(len(xs), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))
        front[i] = not dominated.any()
    return front


def curves(runs: pd.DataFrame, metrics: Mapping[str, pd.DataFrame], *, metric: Optional[str] = None,
           kind: stats.IntervalKind = "t", confidence: float = 0.95) -> pd.DataFrame:
    """Learning curves: one row per (model, task, method, budget, variant, step) with ``mean, low, high,
    n`` of ``eval/<metric>`` over seeds. ``metrics`` maps ``run_dir`` to that run's metrics frame
    (:func:`analysis.load.load_metrics`); ``metric=None`` takes each run's main metric."""
    parts = []
    for _, r in runs.iterrows():
        m = metrics.get(r["run_dir"])
        name = metric or r["main_metric"]
        col = f"eval/{name}"
        if m is None or col not in m or "step" not in m:
            continue
        pts = m.loc[m[col].notna(), ["step", col]].drop_duplicates("step", keep="last").rename(columns={col: "value"})
        for k in KEYS:
            pts[k] = r.get(k, "" if k == "variant" else None)
        pts["variant"] = pts["variant"].fillna("")
        pts["metric"] = name
        pts["seed"] = r.get("seed")
        parts.append(pts)
    cols = KEYS + ["metric", "step", "mean", "low", "high", "n"]
    if not parts:
        return pd.DataFrame(columns=cols)
    allpts = pd.concat(parts, ignore_index=True)
    allpts["budget"] = allpts["budget"].astype(object).where(allpts["budget"].notna(), -1)
    agg = stats.aggregate(allpts, KEYS + ["metric", "step"], ["value"], kind=kind, confidence=confidence)
    agg = agg.rename(columns={"value": "mean", "value_low": "low", "value_high": "high", "value_n": "n"})
    agg["budget"] = _int_or_none(agg["budget"].map(lambda b: None if b == -1 else b))
    return agg[cols].sort_values(KEYS + ["step"], key=lambda s: s.astype(str) if s.name != "step" else s,
                                 kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- formatting

def method_label(method: Any, budget: Any = None, variant: Any = "") -> str:
    """``LoRA r=8``, ``AdaLoRA b=8``, ``Full FT`` (+ `` (variant)``)."""
    name = METHOD_LABELS.get(str(method), str(method))
    if budget is not None and not pd.isna(budget):
        name += f" {'b' if method == 'adalora' else 'r'}={int(budget)}"
    if variant:
        name += f" ({variant})"
    return name


def task_label(task: Any) -> str:
    """``SST-2`` for ``sst2``; other names unchanged."""
    return TASK_LABELS.get(str(task).lower(), str(task))


def metric_label(metric: str) -> str:
    """``Acc ↑`` for accuracy."""
    return f"{METRIC_LABELS.get(metric, metric)} {arrow(metric)}"


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
    """``0.4784 ± 0.0123`` (t: symmetric), ``0.4784 [0.4600, 0.4900]`` (bootstrap), ``0.4784`` (no interval)."""
    if mean is None or pd.isna(mean):
        return "–"
    m = f"{mean * scale:.{digits}f}"
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return m
    if kind == "t":
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
            ("Method", method_label(r["method"], r["budget"], r["variant"]), False),
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
        put("Method", method_label(r["method"], r["budget"], r["variant"]))
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
            out.append(f"Cells: mean over seeds ± half-width of the {stats.describe(kind, confidence=confidence)}.")
        elif kind == "bootstrap":
            out.append(f"Cells: mean over seeds [{stats.describe(kind, confidence=confidence, n_resamples=n_resamples)}].")
        else:
            out.append("Cells: mean over seeds (no interval).")
        if long["task"].nunique() > 1:
            out.append("Avg: mean of the task means (rows with every task only; no interval).")
    else:
        out.append(f"Interval: {stats.describe(kind, confidence=confidence, n_resamples=n_resamples)}.")
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


def render(table: pd.DataFrame, best: Optional[pd.DataFrame] = None, *, fmt: Format = "markdown",
           footer: Iterable[str] = (), caption: Optional[str] = None) -> str:
    """Display table → text: Markdown (pipes), LaTeX (booktabs) or HTML; best cells bold."""
    best = best if best is not None else pd.DataFrame(False, index=table.index, columns=table.columns)
    footer = list(footer)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "markdown":
        def cell(v: str, b: bool) -> str:
            v = str(v).replace("|", "\\|")
            return f"**{v}**" if b else v
        lines = []
        if caption:
            lines += [f"**{caption}**", ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table.columns) + " |")
        lines.append("|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in table.columns) + "|")
        for i in range(len(table)):
            lines.append("| " + " | ".join(cell(table.iat[i, j], bool(best.iat[i, j])) for j in range(table.shape[1])) + " |")
        if footer:
            lines += [""] + [f"{f}  " for f in footer]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        def cell(v: str, b: bool) -> str:
            v = _latex_escape(str(v))
            return f"\\textbf{{{v}}}" if b else v
        align = "".join("l" if c in TEXT_COLUMNS else "r" for c in table.columns)
        lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
                 " & ".join(_latex_escape(c) for c in table.columns) + " \\\\", "\\midrule"]
        for i in range(len(table)):
            lines.append(" & ".join(cell(table.iat[i, j], bool(best.iat[i, j])) for j in range(table.shape[1])) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        cap = " ".join([caption or ""] + footer).strip()
        if cap:
            lines.append(f"\\caption{{{_latex_escape(cap)}}}")
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"
    if fmt == "html":
        txt = [c in TEXT_COLUMNS for c in table.columns]
        txt_attr = ' class="txt"'
        head = "".join(f"<th{txt_attr if t else ''}>{html.escape(str(c))}</th>" for c, t in zip(table.columns, txt))
        body = []
        for i in range(len(table)):
            tds = []
            for j in range(table.shape[1]):
                v = html.escape(str(table.iat[i, j]))
                cls = " ".join(c for c, on in (("txt", txt[j]), ("best", bool(best.iat[i, j]))) if on)
                attr = f' class="{cls}"' if cls else ""
                tds.append(f"<td{attr}><strong>{v}</strong></td>" if bool(best.iat[i, j]) else f"<td{attr}>{v}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        foot = "".join(f"<p class=\"note\">{html.escape(f)}</p>" for f in footer)
        return f"<table class=\"cmp\">{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{foot}\n"
    raise ValueError(f"unknown format {fmt!r}; use markdown, latex, csv or html")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
          "↓": r"$\downarrow$", "–": "--", "·": r"$\cdot$", "×": r"$\times$", "√": r"$\sqrt{}$"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def table_text(runs: pd.DataFrame, *, layout: Literal["wide", "long"] = "wide", fmt: Format = "markdown",
               metric: Optional[str] = None, which: Literal["final", "best"] = "final",
               kind: stats.IntervalKind = "t", confidence: float = 0.95, digits: int = 4, scale: float = 1.0,
               n_resamples: int = 10_000) -> str:
    """Runs frame → the table as text in one call (what ``python -m analysis table`` prints).

    CSV holds the numbers (long: one row per configuration with mean, low, high, n, cost columns and
    ``best``; wide: the :func:`wide` frame), Markdown/LaTeX/HTML the formatted cells.
    """
    long = compare(runs, metric=metric, which=which, kind=kind, confidence=confidence, n_resamples=n_resamples)
    if fmt == "csv":
        if layout == "long":
            out = long.copy()
            out["best"] = best_mask(long)["mean"]
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
    footer += verdict_lines(verdicts(runs, metric=metric, which=which, confidence=confidence), confidence=confidence,
                            digits=digits, scale=scale)
    return render(t, b, fmt=fmt, footer=footer)


# --------------------------------------------------------------------------------------------- loading

def load_inputs(paths: Iterable[str | Path], *, include_unfinished: bool = False,
                peft_task: str = "metamathqa") -> tuple[pd.DataFrame, list[tuple[Path, str]], dict[str, pd.DataFrame]]:
    """Harness run/sweep folders and PEFT result files (or folders of them) → (runs frame with variants,
    skipped runs with reasons, metrics frames by ``run_dir`` for learning curves)."""
    from analysis import load, peft_format

    paths = [Path(p) for p in paths]
    peft_files: list[Path] = []
    harness_paths: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run, sweep or PEFT result file")
        found = peft_format.find_result_files(p)
        if found:
            peft_files += found
        if p.is_dir() and (found == [] or any(p.rglob("run.json"))):
            harness_paths.append(p)
    frames, skipped, metrics = [], [], {}
    if harness_paths:
        runs = load.load_runs(harness_paths, include_unfinished=include_unfinished)
        skipped += runs.skipped
        if not runs.table.empty:
            t = runs.table.assign(source="harness")
            unchosen = load.unchosen_candidates(t["run_dir"])
            out = t["config_hash"].isin(list(unchosen))
            skipped += [(Path(rd), unchosen[h]) for rd, h in zip(t.loc[out, "run_dir"], t.loc[out, "config_hash"])]
            t = t.loc[~out]
            configs = {}
            for rd in t["run_dir"]:
                try:
                    configs[rd] = load.load_run_record(rd).get("config", {})
                except (OSError, ValueError) as e:
                    log.warning("%s: no configuration (%s)", rd, e)
            t = with_variants(t, configs)
            for rd in t["run_dir"]:
                try:
                    metrics[rd] = load.load_metrics(rd)
                except OSError:
                    pass
            frames.append(t)
    if peft_files:
        pr = peft_format.load_peft_results(peft_files, task=peft_task, include_unfinished=include_unfinished)
        skipped += pr.skipped
        if not pr.table.empty:
            frames.append(pr.table)
            for rd in pr.table["run_dir"]:
                metrics[rd] = peft_format.load_peft_metrics(rd)
    table = one_count(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
    return table, skipped, metrics
