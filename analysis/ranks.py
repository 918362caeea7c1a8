"""AdaLoRA's rank allocation: where the budget went, over layers, matrix types, steps and seeds.

Loading reads ``adalora_ranks.jsonl`` of run folders (written by ``harness.methods.adalora``) or the
``rank_pattern`` of a PEFT file (a ``method_comparison`` result, or an adapter's ``adapter_config.json``);
everything else maps DataFrames to DataFrames. The long frame has one row per (run, step, matrix):

    run_dir, seed, task, model, target_r, init_r, step, phase, budget, formula, kept,
    matrix, layer, type, row, rank

``row`` is the heatmap row: the matrix type (Wq, Wk, Wv, Wo, Wf1, Wf2 of an encoder; a decoder's gated FFN adds Wg:
Wg = gate_proj, Wf1 = up_proj, Wf2 = down_proj, seven rows), or ``type (module)`` where a record has several modules
of one type per layer (records written before Wg existed, where gate_proj and up_proj were both Wf1).
Layers are 0-based as in the module names (figures label them 1-based, as the paper does).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from analysis import stats as S
from analysis.load import find_runs, load_runs
from harness.record import BadRecord, read_summary
from harness.families import ATTENTION_TYPES, FAMILIES, FFN_TYPES, MATRIX_TYPES, classify
from harness.schedules import budget_formula

log = logging.getLogger(__name__)

ATTENTION = ATTENTION_TYPES
FFN = FFN_TYPES  # Wg (a decoder's gate), Wf1, Wf2: the types a run does not have count for nothing
CONDITION_KEYS = ("task", "model", "target_r", "init_r", "total_steps")


# --------------------------------------------------------------------------------------------- loading

#: File name of the rank record in a run folder when summary.json does not name it (``adalora/records_file``):
#: runs still going, and runs recorded before the summary named the file.
RANKS_FILE = "adalora_ranks.jsonl"


def rank_file(run_dir: str | Path, named: Optional[str] = None) -> Path:
    """The rank record of a run: ``named`` (the summary's ``adalora/records_file``), else the name in
    ``run_dir``'s summary.json, else :data:`RANKS_FILE`."""
    run_dir = Path(run_dir)
    if not named:
        try:
            named = read_summary(run_dir).get("adalora/records_file")
        except (OSError, BadRecord):
            named = None
    return run_dir / (named if isinstance(named, str) and named else RANKS_FILE)


def read_rank_file(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Header and long frame (step, phase, budget, formula, kept, matrix, layer, type, rank, init_r) of one
    ``adalora_ranks.jsonl``; a torn last line is dropped."""
    path = Path(path)
    header: dict[str, Any] = {}
    recs: list[dict[str, Any]] = []
    with open(path) as f:
        for i, line in enumerate(f):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is not JSON (torn write?); skipped", path, i + 1)
                continue
            if d.get("kind") == "header":
                header = d
            else:
                recs.append(d)
    if not header:
        raise ValueError(f"{path}: no header line (not an AdaLoRA rank record)")
    mats = header["matrices"]
    rows = []
    for r in recs:
        for m, rank in zip(mats, r["ranks"]):
            rows.append({"step": r["step"], "phase": r["phase"], "budget": r["budget"], "formula": r["formula"],
                         "kept": r["kept"], "matrix": m["name"], "layer": m["layer"], "type": m["type"],
                         "rank": rank, "init_r": m["init_r"]})
    df = pd.DataFrame(rows)
    return header, with_rows(df)


def load_allocations(paths: Iterable[str | Path], *, include_unfinished: bool = False) -> pd.DataFrame:
    """Long frame over every AdaLoRA run at or below ``paths`` (runs not ``done`` are left out unless asked)."""
    paths = list(paths)
    runs = load_runs(paths, include_unfinished=include_unfinished)
    for run_dir, why in runs.skipped:
        log.info("%s: %s; left out", run_dir, why)
    frames = []
    for row in runs.table.to_dict("records") if not runs.table.empty else []:
        f = rank_file(row["run_dir"], row.get("adalora/records_file"))
        if not f.is_file():
            continue
        header, df = read_rank_file(f)
        if df.empty:
            continue
        df.insert(0, "run_dir", row["run_dir"])
        for key in ("seed", "task", "model"):
            df[key] = row[key]
        df["target_r"] = header.get("target_r")
        df["total_steps"] = header.get("total_steps")
        df["status"] = row["status"]
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no AdaLoRA rank records ({RANKS_FILE}) under {list(map(str, paths))}")
    return pd.concat(frames, ignore_index=True)


def load_headers(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """``run_dir`` → header of its rank file (schedule parameters for the formula curve)."""
    out = {}
    for run_dir in find_runs(paths):
        f = rank_file(run_dir)
        if f.is_file():
            out[str(run_dir)] = read_rank_file(f)[0]
    return out


def _peft_rank_pattern(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rank_pattern, peft_config) of a method_comparison result or an adapter_config.json."""
    if "run_info" in data:
        cfg = data["run_info"].get("peft_config") or {}
    else:
        cfg = data
    rp = cfg.get("rank_pattern")
    if not rp:
        raise ValueError("no rank_pattern in this file (not an AdaLoRA result, or the run never masked)")
    return rp, cfg


def _module_of(key: str) -> str:
    """``model.layers.0.self_attn.q_proj.lora_E[.default]`` → ``model.layers.0.self_attn.q_proj``."""
    return key.split(".lora_E")[0]


def _family_for_names(names: Sequence[str]) -> Any:
    best, best_hits = None, -1
    for fam in FAMILIES.values():
        hits = sum(classify(n, fam) is not None for n in names)
        if hits > best_hits:
            best, best_hits = fam, hits
    if best_hits <= 0:
        raise ValueError(f"module names such as '{names[0]}' match no family in harness/families.py")
    return best


def from_peft_json(path: str | Path) -> pd.DataFrame:
    """Final ranks of a PEFT AdaLoRA file: one row per matrix (matrix, layer, type, row, rank, init_r, step).

    ``rank_pattern`` maps ``<module>.lora_E`` to a boolean mask over the initial ranks; rank = Σ mask.
    """
    data = json.loads(Path(path).read_text())
    rp, cfg = _peft_rank_pattern(data)
    names = [_module_of(k) for k in rp]
    fam = _family_for_names(names)
    rows = []
    for key, name in zip(rp, names):
        mask = rp[key]
        c = classify(name, fam)
        if c is None:
            log.warning("%s: %s is not one of the family's matrix types; left out", path, name)
            continue
        rows.append({"matrix": name, "layer": c[0], "type": c[1], "rank": int(sum(bool(x) for x in mask)),
                     "init_r": len(mask)})
    df = pd.DataFrame(rows)
    df["step"] = (cfg.get("total_step") or 0)
    df["target_r"] = cfg.get("target_r")
    df["seed"] = 0
    df["run_dir"] = str(path)
    return with_rows(df)


def with_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``row``: the matrix type, or ``type (module)`` where one layer has several modules of that type."""
    if df.empty:
        return df.assign(row=pd.Series(dtype=str))
    suffix = df["matrix"].str.rsplit(".", n=1).str[-1]
    per_layer = df.drop_duplicates(["layer", "matrix"]).groupby(["layer", "type"])["matrix"].nunique()
    multi = set(per_layer[per_layer > 1].index.get_level_values("type"))
    df = df.copy()
    df["row"] = np.where(df["type"].isin(multi), df["type"] + " (" + suffix + ")", df["type"])
    return df


def row_order(rows: Iterable[str]) -> list[str]:
    """Heatmap rows in the paper's order Wq, Wk, Wv, Wo, (Wg,) Wf1, Wf2 (sub-rows by module name)."""

    def key(r: str) -> tuple[int, str]:
        t = r.split(" ")[0]
        return (MATRIX_TYPES.index(t) if t in MATRIX_TYPES else len(MATRIX_TYPES), r)

    return sorted(set(rows), key=key)


# --------------------------------------------------------------------------------------------- computing


def final_ranks(long: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last recorded step."""
    last = long.groupby("run_dir")["step"].transform("max")
    return long[long["step"] == last].reset_index(drop=True)


def at_steps(long: pd.DataFrame, steps: Sequence[int]) -> pd.DataFrame:
    """For each requested step, each run's last record at or before it (column ``at`` = requested step)."""
    out = []
    for s in steps:
        sub = long[long["step"] <= s]
        if sub.empty:
            continue
        last = sub.groupby("run_dir")["step"].transform("max")
        out.append(sub[sub["step"] == last].assign(at=s))
    return pd.concat(out, ignore_index=True) if out else long.iloc[0:0].assign(at=pd.Series(dtype=int))


def default_steps(long: pd.DataFrame, n: int = 4) -> list[int]:
    """``n`` recorded steps spread evenly from the first mask step to the final mask (T − t_f)."""
    masked = long[long["phase"].isin(["budget", "final"])] if "phase" in long.columns else long
    steps = np.array(sorted(masked["step"].unique()) or sorted(long["step"].unique()))
    final = sorted(long.loc[long["phase"] == "final", "step"].unique()) if "phase" in long.columns else []
    end = final[0] if final else steps[-1]
    cand = steps[steps <= end]
    picks = np.linspace(cand[0], end, n)
    return sorted({int(cand[np.abs(cand - p).argmin()]) for p in picks})


def heatmap_table(ranks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, n) of the rank over seeds/runs: index = heatmap rows in the paper's order, columns = layer.

    ``std`` is the sample standard deviation over runs (NaN with one run).
    """
    g = ranks.groupby(["row", "layer"])["rank"]
    mean = g.mean().unstack("layer")
    std = g.std(ddof=1).unstack("layer")
    n = g.count().unstack("layer")
    order = row_order(mean.index)
    cols = sorted(mean.columns)
    return mean.loc[order, cols], std.loc[order, cols], n.loc[order, cols]


def heatmap_long(ranks: pd.DataFrame) -> pd.DataFrame:
    """Tidy form of :func:`heatmap_table` (row, type, layer, mean, std, min, max, n) for CSV files."""
    g = ranks.groupby(["row", "type", "layer"])["rank"]
    out = g.agg(mean="mean", std=lambda s: s.std(ddof=1), min="min", max="max", n="count").reset_index()
    out["row"] = pd.Categorical(out["row"], row_order(out["row"]), ordered=True)
    return out.sort_values(["row", "layer"]).reset_index(drop=True)


def layer_thirds(layers: Sequence[int]) -> tuple[list[int], list[int]]:
    """(bottom, top) layers: the first and last k = max(1, round(L/3)) of the L adapted layers."""
    ls = sorted(set(int(x) for x in layers))
    k = max(1, int(round(len(ls) / 3)))
    return ls[:k], ls[-k:]


def allocation_shares(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per run: where the final budget went. One row per run with

    kept, share_<type> and mean_<type> (mean rank per matrix of that type; the types the run has: six for an
    encoder, seven with a decoder's Wg), ffn_share / attn_share,
    ffn_mean / attn_mean, top_share / bottom_share, top_mean / bottom_mean, the uniform shares
    (what an equal rank for every matrix would give) ``ffn_uniform``, ``top_uniform``, and per type (and for
    ffn / attn) ``topdiff_<type>``: mean rank in the top third minus in the bottom third of the layers.
    """
    out = []
    for run, r in ranks.groupby("run_dir", sort=True):
        kept = r["rank"].sum()
        row: dict[str, Any] = {"run_dir": run, "seed": r["seed"].iloc[0] if "seed" in r else None,
                               "kept": int(kept), "n_matrices": len(r), "n_layers": r["layer"].nunique()}
        columns = share_types(r["type"])
        for t in columns:
            sel = r[r["type"] == t]
            row[f"mean_{t}"] = sel["rank"].mean() if len(sel) else math.nan
            row[f"share_{t}"] = sel["rank"].sum() / kept if len(sel) and kept else math.nan
        for name, types in (("ffn", FFN), ("attn", ATTENTION)):
            sel = r[r["type"].isin(types)]
            row[f"{name}_share"] = sel["rank"].sum() / kept if len(sel) and kept else math.nan
            row[f"{name}_mean"] = sel["rank"].mean() if len(sel) else math.nan
        row["ffn_uniform"] = r["type"].isin(FFN).mean() if r["type"].isin(FFN).any() else math.nan
        bottom, top = layer_thirds(r["layer"])
        for name, layers in (("top", top), ("bottom", bottom)):
            sel = r[r["layer"].isin(layers)]
            row[f"{name}_share"] = sel["rank"].sum() / kept if kept else math.nan
            row[f"{name}_mean"] = sel["rank"].mean()
            row[f"{name}_layers"] = ",".join(str(x) for x in layers)
        row["top_uniform"] = r["layer"].isin(top).mean()
        # per type: does it gain or lose towards the top? (mean rank in the top third − in the bottom third)
        for name, group in [(t, (t,)) for t in columns] + [("ffn", FFN), ("attn", ATTENTION)]:
            sel = r[r["type"].isin(group)]
            t_, b_ = sel[sel["layer"].isin(top)]["rank"], sel[sel["layer"].isin(bottom)]["rank"]
            row[f"topdiff_{name}"] = t_.mean() - b_.mean() if len(t_) and len(b_) else math.nan
        out.append(row)
    return pd.DataFrame(out)


#: types only some families have (a decoder's gate): per-type columns only for runs that have them, so an encoder's
#: tables keep the six columns they always had
OPTIONAL_TYPES = ("Wg",)


def share_types(types: Iterable[str]) -> list[str]:
    """The matrix types :func:`allocation_shares` writes columns for, in the paper's order: the six of an encoder
    always (NaN where a run adapts no such matrix), :data:`OPTIONAL_TYPES` where ``types`` holds them."""
    seen = set(types)
    return [t for t in MATRIX_TYPES if t in seen or t not in OPTIONAL_TYPES]


def ffn_label(shares: pd.DataFrame) -> str:
    """``FFN (Wf1+Wf2)`` for an encoder's runs, ``FFN (Wg+Wf1+Wf2)`` for a decoder's: the FFN types they have."""
    have = [t for t in FFN if f"mean_{t}" in shares and shares[f"mean_{t}"].notna().any()]
    return f"FFN ({'+'.join(have)})" if have else "FFN"


def summarize_shares(shares: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Over runs (seeds are the unit), every numeric column of :func:`allocation_shares`: ``mean``, ``std``,
    ``n`` and the Student-t interval ``low`` / ``high`` (NaN with one run). Index = column name."""
    num = shares.select_dtypes("number").drop(columns=["seed"], errors="ignore")
    rows = {}
    for c in num.columns:
        iv = S.t_interval(num[c], confidence=confidence)
        rows[c] = {"mean": iv.mean, "std": iv.std, "n": iv.n, "low": iv.low, "high": iv.high}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std", "n", "low", "high"])


def verdict(shares: pd.DataFrame, *, confidence: float = 0.95) -> dict[str, Any]:
    """The paper's claim (more budget to the FFN matrices and to the top layers) checked on these runs.

    Per run the differences ``ffn_mean − attn_mean`` (mean rank per FFN matrix minus per attention matrix)
    and ``top_mean − bottom_mean`` (top third of the layers minus bottom third); over runs their mean and
    Student-t interval. ``ffn`` / ``top``: ``agrees`` / ``disagrees`` when ``ffn_p_holm`` / ``top_p_holm`` (the
    t-test of 0, Holm over the claims of the figure; ``ffn_p`` / ``top_p`` unadjusted) is below 1 − confidence,
    by the sign of the mean; ``inconclusive`` otherwise, ``descriptive`` with one run (no interval), ``n/a``
    when not measurable. The paper gives no number, so there is no value answer.
    ``ffn_diff`` / ``top_diff``: the :class:`analysis.stats.Interval`; ``ffn_runs`` /
    ``top_runs``: in how many runs the difference is positive; ``per_type``: mean rank per matrix type;
    ``line``: one sentence for the figure and the terminal.
    """
    n = len(shares)
    pct = f"{confidence * 100:g}%"
    res: dict[str, Any] = {"n_runs": n}
    line = []

    diffs: dict[str, pd.Series] = {}

    def judged(key: str, d: pd.Series, what: str) -> str:
        iv = S.t_interval(d, confidence=confidence)
        res[f"{key}_diff"], res[f"{key}_runs"] = iv, int((d > 0).sum())
        diffs[key] = d
        cell = f"{iv.mean:+.2f}" + (f" [{iv.low:+.2f}, {iv.high:+.2f}]" if iv.n > 1 else " (1 seed)")
        return f"{what} {cell}" + "{p_" + key + "}"

    if shares["ffn_mean"].notna().all() and shares["attn_mean"].notna().all():
        ffn = judged("ffn", shares["ffn_mean"] - shares["attn_mean"], "FFN − attention mean rank")
        line.append(f"{ffn_label(shares)} {100 * shares['ffn_share'].mean():.0f}% of the final budget "
                    f"(uniform {100 * shares['ffn_uniform'].mean():.0f}%); {ffn}")
    else:
        res["ffn"], res["ffn_runs"], res["ffn_diff"] = "n/a", 0, None
        line.append("FFN vs attention: not measurable (only one of them is adapted)")
    if shares["n_layers"].min() > 1:
        top = judged("top", shares["top_mean"] - shares["bottom_mean"], "top − bottom third mean rank")
        line.append(f"top third {100 * shares['top_share'].mean():.0f}% vs bottom third "
                    f"{100 * shares['bottom_share'].mean():.0f}% (uniform {100 * shares['top_uniform'].mean():.0f}% "
                    f"each); {top}")
    else:
        res["top"], res["top_runs"], res["top_diff"] = "n/a", 0, None
    res["per_type"] = {t: float(shares[f"mean_{t}"].mean()) for t in MATRIX_TYPES
                       if f"mean_{t}" in shares and shares[f"mean_{t}"].notna().any()}
    # the paper's two claims (more to FFN, more to the top) of one figure: one Holm family
    claims = S.claim_family([S.claim(d, +1.0, alpha=1 - confidence) for d in diffs.values()], [1.0] * len(diffs))
    ps = {}
    for key, c in zip(diffs, claims):
        res[key], res[f"{key}_p"], res[f"{key}_p_holm"] = c.sign, c.p, c.p_adj
        ps[f"p_{key}"] = f" (p {c.p:.3g}, Holm p {c.p_adj:.3g})" if math.isfinite(c.p) else ""
    line = [part.format(**ps) for part in line]

    def word(v: str, k: int) -> str:
        return v if v == "n/a" else f"{v} (higher in {k}/{n} runs)"

    basis = (f"{pct} Student-t interval over {n} seeds; Holm over the {len(diffs)} verdicts of this figure"
             if n > 1 else "1 seed: descriptive, no interval")
    res["line"] = (" · ".join(line) + f" [{basis}]. Paper (more to FFN and to top layers): "
                   f"FFN {word(res['ffn'], res['ffn_runs'])}, top {word(res['top'], res['top_runs'])}.")
    return res


def rank_over_time(long: pd.DataFrame) -> pd.DataFrame:
    """Mean rank per matrix of each type at each recorded step: mean over matrices, then over runs (± std)."""
    per_run = long.groupby(["run_dir", "step", "type"])["rank"].mean().reset_index()
    g = per_run.groupby(["step", "type"])["rank"]
    out = g.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index()
    out["type"] = pd.Categorical(out["type"], [t for t in MATRIX_TYPES if t in set(out["type"])], ordered=True)
    return out.sort_values(["type", "step"]).reset_index(drop=True)


def budget_per_run(long: pd.DataFrame) -> pd.DataFrame:
    """The kept rank of each run at each recorded step (run_dir, seed where known, step, kept, budget,
    formula): the lines behind :func:`budget_curve`'s mean, drawn one per run below 3 runs."""
    cols = [c for c in ("run_dir", "seed", "step", "kept", "budget", "formula") if c in long]
    return long.drop_duplicates(["run_dir", "step"])[cols].sort_values(["run_dir", "step"]).reset_index(drop=True)


def budget_curve(long: pd.DataFrame,
                 headers: Optional[dict[str, dict[str, Any]]] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measured, formula): the kept rank at each recorded step (mean/min/max over runs, with PEFT's b(t) and
    the formula's), and b(t) of PAPERS.md at every step 0..T from the first run's schedule."""
    per_run = budget_per_run(long)
    measured = per_run.groupby("step").agg(kept_mean=("kept", "mean"), kept_min=("kept", "min"),
                                           kept_max=("kept", "max"), budget=("budget", "first"),
                                           formula=("formula", "first"), n=("kept", "count")).reset_index()
    formula = pd.DataFrame(columns=["step", "formula"])
    if headers:
        h = headers.get(str(per_run["run_dir"].iloc[0])) or next(iter(headers.values()))
        steps = np.arange(0, int(h["total_steps"]) + 1)
        vals = [budget_formula(int(s), b0=h["init_budget"], bT=h["target_budget"], total=h["total_steps"],
                               tinit=h["tinit"], tfinal=h["tfinal"]) for s in steps]
        formula = pd.DataFrame({"step": steps, "formula": vals})
    return measured, formula


def conditions(long: pd.DataFrame, default: str = "ranks") -> list[tuple[str, pd.DataFrame]]:
    """Split the long frame into conditions (task, model, target_r, init_r, total_steps): seeds are pooled;
    ``default``: the label of a condition without any of those keys."""
    keys = [k for k in CONDITION_KEYS if k in long.columns]
    if not keys:
        return [(default, long)]
    out = []
    for vals, sub in long.groupby(keys, dropna=False, sort=True):
        vals = vals if isinstance(vals, tuple) else (vals,)
        d = dict(zip(keys, vals))
        label = "_".join(str(x) for x in (d.get("task"), d.get("model")) if x is not None and x == x)
        if d.get("target_r") is not None and d.get("target_r") == d.get("target_r"):
            label += f"_b{int(d['target_r'])}"
        if d.get("total_steps") is not None and d.get("total_steps") == d.get("total_steps"):
            label += f"_T{int(d['total_steps'])}"
        out.append((label or default, sub))
    return out
