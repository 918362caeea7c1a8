"""Methods compared: runs → one row per (model, task, method, budget, variant) with an interval over seeds.

The input is a runs frame as :func:`analysis.load.load_runs` returns it (or
:func:`analysis.peft_format.load_peft_results`, which maps PEFT result files to the same columns): one
row per run with ``model, task, method, budget, seed, main_metric, eval/<metric>, trainable_params,
effective_params, train_seconds, tokens_per_s, peak_memory_bytes`` (and ``method_label`` where the record
has one).

* :func:`compare` – the long table: metric mean, interval, seeds, cost columns;
* :func:`wide` – the paper layout (AdaLoRA Table 1): rows method × budget, one column per task + average;
* :func:`verdicts` – the papers' method-vs-method claims checked on the runs, seeds as the unit;
* :func:`best_mask`, :func:`pareto_front` – what is best / not dominated;
* :func:`curves` – learning curves (eval metric per step, mean and interval over seeds);
* :func:`seed_values`, :func:`curve_points` – the per-seed values behind the means (figures draw them below
  3 seeds instead of an interval).

Everything here maps DataFrames to DataFrames; :mod:`analysis.render` turns them into text, nothing here
reads or writes files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import yaml

from analysis import stats
from analysis.labels import COSTS, higher_is_better, method_display, method_label, method_order_key, task_order_key
from harness.record import DISPLAY_KEYS
from harness.metrics import metric_range

log = logging.getLogger(__name__)

#: Identity of one compared configuration (a table row of the long layout).
KEYS = ["model", "task", "method", "budget", "variant"]

IGNORED_CONFIG = ("seed", "tracking.", "train.progress", "train.device", "task.glue_dir", "train.save_model")


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


def with_variants(runs: pd.DataFrame, configs: Mapping[str, Mapping[str, Any]],
                  by: Sequence[str] = ("model", "task", "method", "budget")) -> pd.DataFrame:
    """Add a ``variant`` column: the configuration keys (besides seed and tracking) in which runs of one
    group of ``by`` (default: model, task, method, budget) differ, as ``"method.lr=0.001"``; ``""`` where
    they do not differ. Runs that differ in anything but the seed get different variants, so nothing that
    differs is pooled as if it were seeds (tables, the DoRA figure's panels).

    ``configs`` maps ``run_dir`` to the run's resolved configuration (nested or flat); runs without one
    keep their ``variant`` (or get ``""``).
    """
    out = runs.copy()
    if "variant" not in out:
        out["variant"] = ""
    out["variant"] = out["variant"].fillna("")
    flat = {rd: flatten(c) for rd, c in configs.items()}
    group_keys = [k for k in by if k in out]
    for _, g in out.groupby(group_keys, dropna=False, sort=False):
        dirs = [rd for rd in g.get("run_dir", []) if rd in flat]
        if len(dirs) < 2:
            continue
        keys = sorted(set().union(*(flat[rd] for rd in dirs)))
        differ = [k for k in keys if not k.startswith(IGNORED_CONFIG) and k != "seed"
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
    """Sort rows: model, task, method (by its recorded order, then a-z), budget (none first), variant."""
    d = df.copy()
    d["_m"] = d["method"].map(lambda m: method_order_key(m, df))
    d["_b"] = d["budget"].map(lambda b: -1 if b is None or pd.isna(b) else float(b))
    by = ["_m", "_b"] + (["variant"] if "variant" in d else [])
    if "task" in d:
        d["_t"] = d["task"].map(task_order_key)
        by = ["_t"] + by
    if "model" in d:
        by = ["model"] + by
    return d.sort_values(by, kind="stable").drop(columns=[c for c in ("_m", "_b", "_t") if c in d]).reset_index(drop=True)


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


def seed_values(runs: pd.DataFrame, *, metric: Optional[str] = None,
                which: Literal["final", "best"] = "final") -> pd.DataFrame:
    """The values behind each mean of :func:`compare`, one row per run: the keys, ``metric``, ``seed`` and
    ``value``. Figures draw them seed by seed where fewer than 3 seeds make an interval meaningless."""
    if runs.empty:
        return pd.DataFrame(columns=KEYS + ["metric", "seed", "value"])
    r = per_run_values(runs, metric=metric, which=which)
    out = r.reindex(columns=KEYS + ["metric", "seed", "_value"]).rename(columns={"_value": "value"})
    out["budget"] = _int_or_none(out["budget"])
    return out.reset_index(drop=True)


def compare(runs: pd.DataFrame, *, metric: Optional[str] = None, which: Literal["final", "best"] = "final",
            kind: stats.IntervalKind = "t", confidence: float = 0.95, n_resamples: int = 10_000) -> pd.DataFrame:
    """The long table: one row per (model, task, method, budget, variant).

    Columns: the keys; ``metric`` (its name) and ``higher_is_better``; ``mean, low, high, std, n`` of the
    metric over seeds (``low``/``high`` NaN for one seed; a bounded metric's interval kept inside its range,
    :func:`analysis.stats.bounded_t_interval`); ``seeds`` (sorted, comma-separated); the cost
    columns of :data:`COSTS` (means over seeds); ``peak_memory_kind``; ``interval`` (which interval);
    ``not_learned``: how many of the runs did not learn (:func:`not_learned`).
    ``metric=None`` takes each task's main metric; ``which="best"`` the best eval instead of the final one.
    """
    empty = pd.DataFrame(columns=KEYS + ["metric", "higher_is_better", "mean", "low", "high", "std", "n", "seeds"])
    if runs.empty:
        return empty
    r = per_run_values(runs, metric=metric, which=which)
    if r.empty:  # no run of these has a value of the metric (e.g. only failed runs, with --include-unfinished)
        return empty
    rows = []
    for key, g in r.groupby(KEYS + ["metric"], dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(KEYS + ["metric"], key))
        iv = stats.interval(g["_value"], kind=kind, confidence=confidence, n_resamples=n_resamples,
                            bounds=metric_range(str(row["metric"])))
        row["budget"] = None if row["budget"] is None or pd.isna(row["budget"]) else int(row["budget"])
        row.update(higher_is_better=higher_is_better(row["metric"]), mean=iv.mean, low=iv.low, high=iv.high,
                   std=iv.std, n=iv.n, interval=iv.method,
                   seeds=",".join(str(int(s)) for s in sorted(g["seed"].dropna())) if "seed" in g else "")
        for c in COSTS:
            row[c] = float(pd.to_numeric(g[c], errors="coerce").mean()) if c in g else math.nan
        row["not_learned"] = int(not_learned(g).fillna(False).sum())
        for c in DISPLAY_KEYS:  # the record's own, where it has one
            if c in g and g[c].notna().any():
                row[c] = g[c].dropna().iloc[0]
        if "peak_memory_kind" in g:
            kinds = sorted(set(g["peak_memory_kind"].dropna()))
            row["peak_memory_kind"] = ",".join(kinds)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["budget"] = _int_or_none(out["budget"])
    return _order_key(out)


#: Directional claims of the papers, (a, b, source): "a scores higher than b at the same budget" (claims/verdicts.yaml).
CLAIMS_FILE = Path(__file__).resolve().parent.parent / "claims" / "verdicts.yaml"


def paper_claims(path: Path = CLAIMS_FILE) -> tuple[tuple[str, str, str], ...]:
    """The claims of ``path`` as (a, b, source)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return tuple((str(c["a"]), str(c["b"]), str(c["source"])) for c in data["claims"])


def verdicts(runs: pd.DataFrame, *, metric: Optional[str] = None, which: Literal["final", "best"] = "final",
             confidence: float = 0.95, margin: Optional[float] = None) -> pd.DataFrame:
    """The papers' method-vs-method claims (:func:`paper_claims`, claims/verdicts.yaml) checked on these runs, seeds as the unit;
    the claims of one call are one Holm family.

    One row per (model, task, budget, variant, claim) where both methods ran: ``diff`` = mean(a) − mean(b)
    of the metric with its (confidence) interval (``paired`` t over per-seed differences when both ran the
    same seeds, else Welch: ``pairing`` says which), ``n_a``, ``n_b``, ``p`` (two-sided t-test of 0) and
    ``p_holm`` (Holm over the family's p's), ``verdict``: agrees / disagrees / inconclusive by the sign of the
    difference where ``p_holm`` < α (lower-is-better metrics flip the side), descriptive with fewer than two
    seeds a side; ``decision`` / ``p_equiv`` / ``p_equiv_holm`` / ``margin``: the four-way verdict at the margin
    (:func:`analysis.stats.decide_family` over the same family); ``not_learned``: runs of either side that did not learn
    (:func:`not_learned`), ``low_n``: fewer seeds than the contrast needs (:func:`analysis.stats.seeds_needed`)."""
    cols = ["model", "task", "budget", "variant", "claim", "source", "metric", "a", "b", "diff", "low", "high",
            "n_a", "n_b", "paired", "pairing", "p", "p_holm", "verdict", "margin", "p_equiv", "p_equiv_holm",
            "decision", "low_n", "not_learned"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    r = per_run_values(runs, metric=metric, which=which)
    r = r.assign(_nl=not_learned(r))
    r = r[r["budget"].notna()]
    rows, claims, signs, decisions = [], [], [], []
    for key, g in r.groupby(["model", "task", "budget", "variant", "metric"], dropna=False, sort=False):
        for a, b, source in paper_claims():
            ga, gb = g[g["method"] == a], g[g["method"] == b]
            if ga.empty or gb.empty:
                continue
            d = _decide_pair(ga, gb, key[4], margin, 1 - confidence)
            decisions.append(d)
            sign = 1.0 if higher_is_better(key[4]) else -1.0
            diffs = (ga.set_index("seed")["_value"].sort_index() - gb.set_index("seed")["_value"].sort_index()
                     if d.paired else None)
            claims.append(stats.claim(diffs, sign, alpha=1 - confidence) if diffs is not None else
                          stats.Claim(d.estimate, d.low, d.high, d.n, d.p, d.p, "", math.nan, math.nan, math.nan,
                                      "no paper value", alpha=1 - confidence))
            signs.append(sign)
            rows.append({"model": key[0], "task": key[1], "budget": int(key[2]), "variant": key[3],
                         "claim": f"{method_display(a, r)['method_label']} > {method_display(b, r)['method_label']}",
                         "source": source,
                         "metric": key[4], "a": a, "b": b, "diff": d.estimate, "low": d.low, "high": d.high,
                         "n_a": len(ga), "n_b": len(gb), "paired": d.paired,
                         "pairing": "paired by seed" if d.paired else "Welch (unpaired)", "p": d.p,
                         "margin": d.margin, "p_equiv": d.p_equiv, "decision": d.verdict, "low_n": d.low_n,
                         "not_learned": int(ga["_nl"].sum() + gb["_nl"].sum())})
    family = stats.decide_family(decisions, alpha=1 - confidence) if decisions else []
    for row, c, d in zip(rows, stats.claim_family(claims, signs), family):
        row.update(p_holm=c.p_adj, verdict=c.sign, decision=d.verdict, p_equiv_holm=d.p_equiv_adj)
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["model", "task", "budget"], key=lambda c: c.map(task_order_key) if c.name == "task" else c,
                           kind="stable").reset_index(drop=True) if not out.empty else out


def _decide_pair(ga: pd.DataFrame, gb: pd.DataFrame, metric: str, margin: Optional[float],
                 alpha: float, bound: Any = None) -> stats.Decision:
    """a − b of two configurations' per-run values: paired by seed when both have the same seeds (≥ 2),
    else Welch; at ``margin`` (default: :func:`analysis.stats.default_margin` of the metric). ``bound``: an
    :class:`analysis.sequential.Boundary` — decide at a look of a sequential sweep (repeated intervals)."""
    sa, sb = ga.set_index("seed")["_value"], gb.set_index("seed")["_value"]
    paired = len(sa) > 1 and sorted(sa.index) == sorted(sb.index)
    m = stats.default_margin(metric) if margin is None else margin
    hib = higher_is_better(metric)
    if paired:
        sa, sb = sa.sort_index(), sb.sort_index()
    if bound is not None:
        from analysis import sequential

        return sequential.decide(sa, sb, bound=bound, margin=m, paired=paired, higher_is_better=hib, alpha=alpha)
    return stats.decide(sa, sb, margin=m, paired=paired, higher_is_better=hib, alpha=alpha)


#: Contrast columns of the long table (:func:`contrasts`).
CONTRAST_COLUMNS = ["model", "task", "metric", "contrast", "a", "b", "difference", "low", "high", "low_eq",
                    "high_eq", "p", "p_holm", "p_equiv", "p_equiv_holm", "margin", "n", "n_a", "n_b", "paired",
                    "pairing", "verdict", "low_n", "n_needed", "sd", "not_learned"]


def _config_label(g: pd.DataFrame) -> str:
    r = g.iloc[0]
    label = r.get("method_label") if "method_label" in g else None
    return method_label(r["method"], r["budget"], r["variant"], label=label if isinstance(label, str) else None, rows=g)


def contrast_pairs(configs: Sequence[tuple[Any, ...]], baseline: Sequence[Any] = ()) -> list[tuple[int, int]]:
    """Which configurations (method, budget, variant) of one (model, task) are compared, as (a, b) indices:
    every other configuration against those of a ``baseline`` method (b; full fine-tuning: the method that
    records ``method_baseline``), and every two other configurations of one budget (a after b in the order
    given: by method order, then by variant)."""
    full = [i for i, c in enumerate(configs) if c[0] in baseline]
    out = [(i, f) for f in full for i, c in enumerate(configs) if c[0] not in baseline]
    rest = [i for i, c in enumerate(configs) if c[0] not in baseline]
    for x, i in enumerate(rest):
        for j in rest[x + 1:]:
            if configs[i][1] == configs[j][1]:
                out.append((j, i))
    return out


def contrasts(runs: pd.DataFrame, *, metric: Optional[str] = None, which: Literal["final", "best"] = "final",
              margin: Optional[float] = None, alpha: float = 0.05, bound: Any = None) -> pd.DataFrame:
    """Method vs method and method vs full FT, one row per contrast (:func:`contrast_pairs`), decided at the
    margin (:func:`analysis.stats.decide`; paired by seed when both sides ran the same seeds, else Welch) and
    Holm-adjusted over every contrast of the call (one family: the table). Columns: :data:`CONTRAST_COLUMNS`
    (``difference`` = a − b; ``verdict`` four-way from the Holm p's; ``not_learned``: runs of either side that
    did not learn). ``bound``: a sequential sweep's boundary (:mod:`analysis.sequential`): repeated intervals
    and p's at the current look."""
    if runs.empty:
        return pd.DataFrame(columns=CONTRAST_COLUMNS)
    r = per_run_values(runs, metric=metric, which=which)
    r = r.assign(_nl=not_learned(r))
    rows, decisions = [], []
    for (model, task, name), g in r.groupby(["model", "task", "metric"], dropna=False, sort=False):
        parts = [(k, c) for k, c in g.groupby(["method", "budget", "variant"], dropna=False, sort=False)]
        parts.sort(key=lambda kc: (*method_order_key(kc[0][0], g), -1 if pd.isna(kc[0][1]) else float(kc[0][1]),
                                   str(kc[0][2])))
        baseline = [m for m in dict.fromkeys(g["method"]) if method_display(m, g)["method_baseline"]]
        for i, j in contrast_pairs([k for k, _ in parts], baseline):
            ga, gb = parts[i][1], parts[j][1]
            d = _decide_pair(ga, gb, name, margin, alpha, bound)
            decisions.append(d)
            la, lb = _config_label(ga), _config_label(gb)
            rows.append({"model": model, "task": task, "metric": name, "contrast": f"{la} − {lb}", "a": la, "b": lb,
                         "n_a": len(ga), "n_b": len(gb), "not_learned": int(ga["_nl"].sum() + gb["_nl"].sum())})
    for row, d in zip(rows, stats.decide_family(decisions, alpha=alpha)):
        row.update(difference=d.estimate, low=d.low, high=d.high, low_eq=d.low_eq, high_eq=d.high_eq, p=d.p,
                   p_holm=d.p_adj, p_equiv=d.p_equiv, p_equiv_holm=d.p_equiv_adj, margin=d.margin, n=d.n,
                   paired=d.paired, pairing="paired by seed" if d.paired else "Welch (unpaired)", verdict=d.verdict,
                   low_n=d.low_n, n_needed=d.n_needed, sd=d.sd)
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


# --------------------------------------------------------------------------------------------- did it learn?

#: A run within this of chance did not learn: accuracy within max(0.01, 2 binomial standard errors) of the
#: dev set's majority-class rate; a correlation-type metric (Matthews, Pearson, Spearman, their mean) ≤ 0.05.
CHANCE_ACCURACY_TOLERANCE = 0.01
CHANCE_CORRELATION = 0.05
_CORRELATIONS = ("matthews", "pearson", "spearman", "pearson_spearman")


def not_learned(runs: pd.DataFrame) -> pd.Series:
    """Per run (same index): True when its dev main metric is within chance, False when not, NA when it cannot
    be told. The rule (:data:`CHANCE_ACCURACY_TOLERANCE`, :data:`CHANCE_CORRELATION`): a correlation-type main
    metric (or, for accuracy, a recorded ``eval/matthews``) ≤ 0.05; accuracy ≤ the dev majority-class rate
    (``dev_majority_rate`` in summary.json) + max(0.01, 2·sqrt(m(1 − m)/n_dev)) (``dev_examples``; 0.01
    without it); NA for accuracy without a recorded majority rate or Matthews (records from before it)."""
    out = pd.Series(pd.NA, index=runs.index, dtype="boolean")
    for idx, r in runs.iterrows():
        name = str(r.get("metric") if "metric" in runs else r.get("main_metric"))
        v = r.get(f"eval/{name}", r.get("_value", r.get("main_metric_value")))
        if name == "pearson_spearman" and pd.isna(v):
            v = r.get("main_metric_value")
        if v is None or pd.isna(v):
            continue
        if name in _CORRELATIONS:
            out.at[idx] = float(v) <= CHANCE_CORRELATION
        elif name == "accuracy" and pd.notna(r.get("dev_majority_rate", math.nan)):
            m, n = float(r["dev_majority_rate"]), r.get("dev_examples", math.nan)
            tol = max(CHANCE_ACCURACY_TOLERANCE, 2 * math.sqrt(m * (1 - m) / n)) if pd.notna(n) and n else \
                CHANCE_ACCURACY_TOLERANCE
            out.at[idx] = float(v) <= m + tol
        elif name == "accuracy" and pd.notna(r.get("eval/matthews", math.nan)):
            out.at[idx] = float(r["eval/matthews"]) <= CHANCE_CORRELATION
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
        for c in DISPLAY_KEYS:
            if c in r and not (r[c] is None or (isinstance(r[c], float) and math.isnan(r[c]))):
                row[c] = r[c]
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


def curve_points(runs: pd.DataFrame, metrics: Mapping[str, pd.DataFrame], *,
                 metric: Optional[str] = None) -> pd.DataFrame:
    """The points behind :func:`curves`, one row per (run, eval step): the keys, ``metric``, ``seed``, ``step``
    and ``value`` (the run's ``eval/<metric>`` there). Figures draw them as one line per seed where fewer than
    3 seeds make an interval meaningless. ``metrics`` and ``metric`` as for :func:`curves`."""
    cols = KEYS + ["metric", "seed", "step", "value"]
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
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    out["budget"] = _int_or_none(out["budget"])
    return out


def curves(runs: pd.DataFrame, metrics: Mapping[str, pd.DataFrame], *, metric: Optional[str] = None,
           kind: stats.IntervalKind = "t", confidence: float = 0.95) -> pd.DataFrame:
    """Learning curves: one row per (model, task, method, budget, variant, step) with ``mean, low, high,
    n`` of ``eval/<metric>`` over seeds. ``metrics`` maps ``run_dir`` to that run's metrics frame
    (:func:`analysis.load.load_metrics`); ``metric=None`` takes each run's main metric. The per-seed points:
    :func:`curve_points`."""
    cols = KEYS + ["metric", "step", "mean", "low", "high", "n"]
    allpts = curve_points(runs, metrics, metric=metric)
    if allpts.empty:
        return pd.DataFrame(columns=cols)
    allpts["budget"] = allpts["budget"].where(allpts["budget"].notna(), -1)
    agg = pd.concat([stats.aggregate(g, KEYS + ["metric", "step"], ["value"], kind=kind, confidence=confidence,
                                     bounds={"value": b} if (b := metric_range(str(m))) else None)
                     for m, g in allpts.groupby("metric", sort=True)], ignore_index=True)
    agg = agg.rename(columns={"value": "mean", "value_low": "low", "value_high": "high", "value_n": "n"})
    agg["budget"] = _int_or_none(agg["budget"].map(lambda b: None if b == -1 else b))
    return agg[cols].sort_values(KEYS + ["step"], key=lambda s: s.astype(str) if s.name != "step" else s,
                                 kind="stable").reset_index(drop=True)
