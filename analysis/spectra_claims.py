"""The papers' claims about fine-tuned weights, checked with seed-level statistics and four-way verdicts.

Claims are data (``claims/spectra.yaml``, or ``--claims FILE``): each names methods by the name their runs record
(run.json ``method``), a measure of :mod:`analysis.spectra` (or ``phi``, the subspace similarity) and a practical
margin; this module names no method. Seeds are the unit: every run gives one value (the mean of the measure over
the matrices all compared runs have, at its final snapshot; for ``similarity`` the mean φ to the reference run of
the same seed), and :func:`analysis.stats.decide` compares the two sides over seeds (paired when both ran the same
seeds, else Welch), :func:`analysis.stats.decide_family` Holm-adjusts the contrasts of one claim as a family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from analysis.errors import BadOption
from analysis.spectra import MEASURES, condition_keys, condition_labels, final_values, group_keys

CLAIMS_FILE = Path(__file__).resolve().parent.parent / "claims" / "spectra.yaml"
#: what each kind of claim needs besides id, text, measure and margin
KINDS: dict[str, tuple[str, ...]] = {"methods": ("a", "b"), "similarity": ("a", "b", "reference"), "lr": ("method",)}
#: a decision's verdict (higher_is_better: the claim's direction) -> what it says about the claim
READINGS: dict[str, str] = {"better": "supports", "worse": "contradicts", "equivalent": "equivalent within the margin",
                            "undetermined": "undetermined", "descriptive": "descriptive (1 seed)"}


@dataclass(frozen=True)
class Claim:
    """One claim "a is higher than b on ``measure``" (``lr``: the highest lr of ``method`` higher than its
    lowest; ``similarity``: φ(a, reference) higher than φ(b, reference))."""

    id: str
    text: str
    kind: str
    measure: str
    margin: float
    source: str = ""
    a: Optional[str] = None
    b: Optional[str] = None
    reference: Optional[str] = None
    method: Optional[str] = None


def load_claims(path: Path = CLAIMS_FILE) -> list[Claim]:
    """The claims of a YAML file (``claims:`` list); BadOption naming the file, entry and key when malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BadOption(f"--claims: {path}: unreadable ({e}); give a YAML file with a 'claims:' list") from None
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BadOption(f"--claims: {path}: no 'claims:' list (see {CLAIMS_FILE})")
    out = []
    for n, e in enumerate(entries):
        where = f"--claims: {path}: claim {n + 1}"
        if not isinstance(e, dict):
            raise BadOption(f"{where}: not a mapping")
        kind = e.get("kind")
        if kind not in KINDS:
            raise BadOption(f"{where}: kind {kind!r}; use one of {sorted(KINDS)}")
        need = ("id", "text", "measure", "margin", *KINDS[kind])
        if missing := [k for k in need if e.get(k) in (None, "")]:
            raise BadOption(f"{where}: missing {', '.join(missing)}")
        known = ("phi",) if kind == "similarity" else tuple(MEASURES)
        if e["measure"] not in known:
            raise BadOption(f"{where}: measure {e['measure']!r}; use one of {list(known)}")
        if not isinstance(e["margin"], (int, float)) or not e["margin"] > 0:
            raise BadOption(f"{where}: margin must be a number > 0, got {e['margin']!r}")
        unknown = set(e) - set(Claim.__dataclass_fields__)
        if unknown:
            raise BadOption(f"{where}: unknown keys {sorted(unknown)}")
        out.append(Claim(**{**e, "margin": float(e["margin"]), "id": str(e["id"])}))
    return out


# ------------------------------------------------------------------------------------------------ contrasts


@dataclass
class Contrast:
    """Two sides of one comparison: the value of each run (seed -> value) and the sides' labels."""

    claim: Claim
    group: str
    a: str
    b: str
    a_values: dict[Any, float]
    b_values: dict[Any, float]


def _run_values(final: pd.DataFrame, measure: str, run_dirs: list[str]) -> dict[str, float]:
    """run_dir -> mean of ``measure`` over the matrices every one of ``run_dirs`` has (final step)."""
    f = final[(final["measure"] == measure) & final["run_dir"].isin(run_dirs)]
    sets = [set(g["matrix"]) for _, g in f.groupby("run_dir")]
    common = set.intersection(*sets) if sets else set()
    f = f[f["matrix"].isin(common)]
    return f.groupby("run_dir")["value"].mean().to_dict()


def _by_seed(runs: pd.DataFrame, values: dict[str, float]) -> dict[Any, float]:
    return {s: values[d] for d, s in zip(runs["run_dir"], runs["seed"]) if d in values and math.isfinite(values[d])}


def _pairs(claim: Claim, runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(group, runs of side a, runs of side b) for each configuration pair the claim compares."""
    r = runs.assign(_cond=condition_keys(runs), _group=group_keys(runs), _label=condition_labels(runs))
    out = []
    for _, g in r.groupby("_group", sort=False):
        group = group_label(g.iloc[0])
        if claim.kind == "lr":
            mine = g[g["method"].astype(str) == claim.method]
            for _, same in mine.groupby(mine["budget"].fillna(-1), sort=False):
                lrs = sorted(same["lr"].dropna().unique())
                if len(lrs) >= 2:
                    out.append((group, same[same["lr"] == lrs[-1]], same[same["lr"] == lrs[0]]))
            continue
        a_side, b_side = g[g["method"].astype(str) == claim.a], g[g["method"].astype(str) == claim.b]
        for _, ga in a_side.groupby("_cond", sort=False):
            for _, gb in b_side.groupby("_cond", sort=False):
                ba, bb = ga["budget"].iloc[0], gb["budget"].iloc[0]
                if pd.notna(ba) and pd.notna(bb) and float(ba) != float(bb):
                    continue
                out.append((group, ga, gb))
    return out


def group_label(run: pd.Series) -> str:
    """``SST-2, minilm, 1000 steps``: what a group of comparable runs shares."""
    from analysis.labels import task_label

    steps = run.get("total_steps")
    return ", ".join([task_label(run.get("task")), str(run.get("model"))]
                     + ([f"{int(steps)} steps"] if steps is not None and not pd.isna(steps) else []))


def contrasts(claim: Claim, measures: pd.DataFrame, runs: pd.DataFrame, sims: pd.DataFrame) -> list[Contrast]:
    """The contrasts of one claim among ``runs`` (only runs with measures take part)."""
    final = final_values(measures)
    runs = runs[runs["run_dir"].isin(set(final["run_dir"]))]
    out = []
    if claim.kind == "similarity":
        ref = sims[(sims["kind"] == "reference") & (sims["method_b"].astype(str) == claim.reference)]
        for group, ga, gb in _pairs(claim, runs):
            for cond_ref, r in ref.groupby("cond_b", sort=False):
                sa, sb = r[r["run_a"].isin(set(ga["run_dir"]))], r[r["run_a"].isin(set(gb["run_dir"]))]
                common = set(sa["matrix"]) & set(sb["matrix"])
                va = sa[sa["matrix"].isin(common)].groupby("seed_a")["phi"].mean().to_dict()
                vb = sb[sb["matrix"].isin(common)].groupby("seed_a")["phi"].mean().to_dict()
                if va and vb:
                    out.append(Contrast(claim, group, f"{ga['_label'].iloc[0]} to {cond_ref}",
                                        f"{gb['_label'].iloc[0]} to {cond_ref}", va, vb))
        return out
    for group, ga, gb in _pairs(claim, runs):
        values = _run_values(final, claim.measure, [*ga["run_dir"], *gb["run_dir"]])
        out.append(Contrast(claim, group, str(ga["_label"].iloc[0]), str(gb["_label"].iloc[0]),
                            _by_seed(ga, values), _by_seed(gb, values)))
    return out


def decide(c: Contrast) -> Any:
    """The decision of one contrast (:func:`analysis.stats.decide`, higher is the claim's direction): paired over
    the seeds when both sides ran the same seeds (at least 2), else Welch."""
    from analysis import stats

    seeds = sorted(set(c.a_values) & set(c.b_values))
    paired = len(seeds) >= 2 and set(c.a_values) == set(c.b_values)
    if paired:
        a, b = [c.a_values[s] for s in seeds], [c.b_values[s] for s in seeds]
    else:
        a, b = list(c.a_values.values()), list(c.b_values.values())
    return stats.decide(a, b, margin=c.claim.margin, paired=paired, higher_is_better=True)


def evaluate(claims: list[Claim], measures: pd.DataFrame, runs: pd.DataFrame, sims: pd.DataFrame) -> pd.DataFrame:
    """One row per contrast of every claim: the claim, the two sides with their means and seeds, the decision
    (estimate = mean a − b, its interval, p, Holm-adjusted p within the claim's family, verdict) and what it says
    of the claim (:data:`READINGS`). A claim without any contrast in these runs gets one row saying so."""
    from analysis import stats

    rows = []
    for claim in claims:
        cs = contrasts(claim, measures, runs, sims)
        base = {"claim": claim.id, "text": claim.text, "source": claim.source, "measure": claim.measure,
                "margin": claim.margin}
        if not cs:
            rows.append({**base, "reading": "not measured (no runs to compare in these folders)"})
            continue
        for c, d in zip(cs, stats.decide_family([decide(c) for c in cs])):
            rows.append({**base, "group": c.group, "a": c.a, "b": c.b,
                         "a_mean": _mean(c.a_values), "b_mean": _mean(c.b_values),
                         "n_a": len(c.a_values), "n_b": len(c.b_values), "n": d.n, "paired": d.paired,
                         "estimate": d.estimate, "low": d.low, "high": d.high, "p": d.p, "p_adj": d.p_adj,
                         "p_equiv_adj": d.p_equiv_adj, "verdict": d.verdict, "low_n": d.low_n,
                         "reading": READINGS.get(d.verdict, d.verdict)})
    return pd.DataFrame(rows)


def _mean(values: dict[Any, float]) -> float:
    return float(sum(values.values()) / len(values)) if values else math.nan


def markdown(verdicts: pd.DataFrame) -> str:
    """The verdicts as a Markdown table (one row per contrast)."""
    lines = ["| claim | runs | a | b | mean a | mean b | a − b [95% CI] | seeds | Holm p | verdict | reading |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in verdicts.to_dict("records"):
        if "a" not in r or pd.isna(r.get("a")):
            lines.append(f"| {r['text']} | – | – | – | – | – | – | – | – | – | {r['reading']} |")
            continue
        ci = f"{r['estimate']:+.3g} [{r['low']:+.3g}, {r['high']:+.3g}]" if math.isfinite(r["low"]) else \
            f"{r['estimate']:+.3g}"
        seeds = f"{int(r['n'])} paired" if r["paired"] else f"{int(r['n_a'])} vs {int(r['n_b'])}"
        lines.append(f"| {r['text']} | {r['group']} | {r['a']} | {r['b']} | "
                     f"{r['a_mean']:.3g} | {r['b_mean']:.3g} | {ci} | {seeds} | {r['p_adj']:.2g} | {r['verdict']} | "
                     f"{r['reading']} |")
    return "\n".join(lines)
