"""The weight-analysis suite over run folders: every snapshot of every tracked matrix of every run → measures.

For each run (any method: the rebuild **form** recorded in its ``snapshots/meta.json`` says how W and ΔW = W − W0
come from the stored tensors; no method is named here), each snapshot step after 0 and each tracked matrix:

* ``intruders`` — intruder dimensions of W against W0 (:mod:`analysis.measures.intruders`, PEFT's k and ε),
* ``effective_rank`` — the rank holding ``energy`` (90%) of ΔW's spectrum's energy, ``stable_rank`` of ΔW,
* ``amplification`` — ‖ΔW‖_F / ‖Uᵀ W0 V‖_F over ΔW's top-r singular vectors (r = ``top_r`` clipped to ΔW's rank),
* ``w0_alignment`` — the share of ΔW's energy in W0's top-``top_r`` singular subspace,
* ``dW_rank`` (numerical rank of ΔW) and ``dW_fro`` (‖ΔW‖_F).

Batched per (run, step, shape) on the GPU when there is one (``device``), in float64. ΔW of a factored form
(ΔW = B'A', e.g. ``low_rank``: B' = s·B, A' = A) goes through the low-rank path (QR of the factors, a q×q SVD);
other forms (``magnitude_low_rank``, ``dense``) through a dense SVD. W0's SVD is computed once per W0 file and
matrix. A ``dense`` matrix stored only as summaries (full FT without ``snapshot.full_weights``) has no ΔW: it is
named in the problems and left out.

Results: :class:`SpectraResult` — ``measures`` (one row per run, step, matrix, measure), ``spectrum`` (ΔW's
singular values at each run's final step), ``bases`` (ΔW's top singular vectors at the final step, for the
subspace similarities of :func:`similarities`). Pure apart from reading the run folders.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import pandas as pd
import torch
from torch import Tensor

from analysis.decomposition import RunSnapshots, SnapshotError, open_snapshots
from analysis.measures.alignment import w0_alignment
from analysis.measures.amplification import amplification
from analysis.measures.effective_rank import ENERGY, effective_rank, stable_rank
from analysis.measures.intruders import EPSILON, TOP_K, intruder_count
from analysis.measures.linalg import SVD, device_for, numerical_rank, svd_dense, svd_factored
from analysis.measures.subspace import subspace_similarity
from harness.record import read_run
from harness.snapshot_format import DENSE, rebuild

log = logging.getLogger(__name__)

#: the per-matrix measures, in table order, with what they are (for CSV notes, figure labels and docs)
MEASURES: dict[str, str] = {
    "intruders": "intruder dimensions among W's top-k singular vectors",
    "effective_rank": "effective rank of ΔW (rank holding the energy fraction of its spectrum)",
    "stable_rank": "stable rank of ΔW, ‖ΔW‖²_F/‖ΔW‖²_2",
    "amplification": "amplification factor ‖ΔW‖_F/‖UᵀW0V‖_F",
    "w0_alignment": "share of ΔW's energy in W0's top-r singular subspace",
    "dW_rank": "numerical rank of ΔW",
    "dW_fro": "‖ΔW‖_F",
}
#: columns identifying a run in every table
RUN_COLUMNS = ("run_dir", "run", "method", "method_label", "method_color", "budget", "lr", "seed", "task", "model",
               "total_steps")


@dataclass(frozen=True)
class Settings:
    """Parameters of the measures: PEFT's intruder ``top_k`` and ``epsilon``, the effective rank's ``energy``,
    ``top_r`` (ΔW's top-r for amplification and similarity, W0's top-r for the alignment), device and dtype."""

    top_k: int = TOP_K
    epsilon: float = EPSILON
    energy: float = ENERGY
    top_r: int = 8
    device: str = "auto"
    dtype: torch.dtype = torch.float64


def _scaled(s: Any, b: Tensor) -> Tensor:
    return b * float(s)


#: ΔW = B'A' of the factored forms (harness.snapshot_format): (B' (out, q), A' (q, in)) from a step's tensors
#: and the scale s. A form not listed here takes the dense path (always correct, only slower).
FACTORS: dict[str, Callable[[Mapping[str, Tensor], float], tuple[Tensor, Tensor]]] = {
    "low_rank": lambda t, s: (_scaled(s, t["B"]), t["A"]),
    "low_rank_shifted": lambda t, s: (_scaled(s, torch.cat([t["B"], -t["B0"]], dim=-1)),
                                      torch.cat([t["A"], t["A0"]], dim=-2)),
    "gated_low_rank": lambda t, s: (_scaled(s, t["B"]), t["A"] * t["E"]),
    "scaled_low_rank": lambda t, s: (_scaled(s, t["b"].unsqueeze(-1) * t["B"]), t["d"].unsqueeze(-1) * t["A"]),
}


@dataclass
class SpectraResult:
    """``measures``: long table (RUN_COLUMNS, step, matrix, label, layer, type, form, measure, value);
    ``spectrum``: ΔW's singular values at each run's final step (RUN_COLUMNS, matrix, layer, type, i (1-based),
    sigma); ``bases``: (run_dir, matrix) → (ΔW's top-``top_r`` left singular vectors (out, r) on the CPU, r =
    ``top_r`` clipped to ΔW's numerical rank) at the final step; ``problems``: what was left out, and why."""

    measures: pd.DataFrame
    spectrum: pd.DataFrame
    bases: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)


# ------------------------------------------------------------------------------------------------ runs


def _lr(run_dir: str, row: Mapping[str, Any]) -> float:
    """The lr a run trained with: summary.json's / run.json's ``lr`` (effective), else the recorded config's."""
    if row.get("lr") is not None and not pd.isna(row.get("lr")):
        return float(row["lr"])
    try:
        rec = read_run(Path(run_dir), derive=False)
    except (OSError, ValueError):  # BadRecord is a ValueError
        return math.nan
    cfg = rec.get("config") or {}
    lr = rec.get("lr") or (cfg.get("train") or {}).get("lr") or (cfg.get("method") or {}).get("lr")
    return float(lr) if lr is not None else math.nan


def load_run_table(paths: Iterable[str | Path], *, include_unfinished: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per run with :data:`RUN_COLUMNS` (``lr``: the effective lr; ``run``: the folder's name) and the
    runs left out, as text."""
    from analysis.load import load_runs

    runs = load_runs(paths, include_unfinished=include_unfinished)
    problems = [f"{d}: left out ({why})" for d, why in runs.skipped]
    table = runs.table
    if table.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS)), problems
    table = table.copy()
    table["lr"] = [_lr(d, r) for d, r in zip(table["run_dir"], table.to_dict("records"))]
    table["run"] = table["run_dir"].map(lambda d: Path(d).name)
    if "total_steps" not in table:
        table["total_steps"] = table["steps"] if "steps" in table else math.nan
    for c in RUN_COLUMNS:
        if c not in table:
            table[c] = None
    return table[list(RUN_COLUMNS)].reset_index(drop=True), problems


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class _Item:
    """One (step, matrix) to measure: W and W0 (out, in) on the device, ΔW's factors when its form has them."""

    step: int
    name: str
    w0: Tensor
    w: Tensor
    factors: Optional[tuple[Tensor, Tensor]]


class _W0Cache:
    """W0's SVD per (W0 checksum, matrix), computed once for all runs sharing the W0 file."""

    def __init__(self) -> None:
        self.svd: dict[tuple[str, str], SVD] = {}

    def get(self, key: str, names: list[str], w0s: list[Tensor]) -> list[SVD]:
        missing = [(n, w) for n, w in zip(names, w0s) if (key, n) not in self.svd]
        if missing:
            dec = svd_dense(torch.stack([w for _, w in missing]))
            for i, (n, _) in enumerate(missing):
                self.svd[(key, n)] = SVD(dec.u[i], dec.s[i], dec.v[i])
        return [self.svd[(key, n)] for n in names]


def _items(snaps: RunSnapshots, step: int, settings: Settings, device: torch.device,
           problems: list[str], summaries_only: set[str]) -> list[_Item]:
    """The measurable matrices of one step; a dense matrix without its stored W goes into ``summaries_only``,
    a bad file into ``problems``."""
    out = []
    for name, info in snaps.matrices.iterrows():
        try:
            t = snaps.tensors(step, name)
            form = str(info["form"])
            if form == DENSE and "W" not in t:
                summaries_only.add(name)
                continue
            w0 = snaps.w0(name).to(device=device, dtype=settings.dtype)
        except (SnapshotError, KeyError) as e:
            problems.append(f"{e} — left out")
            continue
        t = {k: v.to(device=device, dtype=settings.dtype) for k, v in t.items()}
        scale = float(info["scale"]) if info["scale"] is not None and not pd.isna(info["scale"]) else 1.0
        w = rebuild(form, w0, t, scale)
        out.append(_Item(step, name, w0, w, FACTORS[form](t, scale) if form in FACTORS else None))
    return out


def _batches(items: list[_Item]) -> list[list[int]]:
    """Indices of items that share one batched ΔW SVD: the dense ones, and the factored ones by q."""
    by_q: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by_q.setdefault(-1 if it.factors is None else it.factors[0].shape[-1], []).append(i)
    return list(by_q.values())


def _delta_measures(items: list[_Item], w0: Tensor, u0: Tensor, v0: Tensor, settings: Settings) -> tuple[SVD, Tensor]:
    """ΔW's SVD (low-rank path when factored, else dense) and its energy share in W0's top-r subspace, for
    items of one :func:`_batches` batch: (SVD, alignment (g,))."""
    if items[0].factors is None:
        delta = torch.stack([it.w - it.w0 for it in items])
        return svd_dense(delta), w0_alignment(u0, v0, settings.top_r, delta=delta)
    b = torch.stack([it.factors[0] for it in items])  # type: ignore[index]
    a = torch.stack([it.factors[1] for it in items])  # type: ignore[index]
    return svd_factored(b, a), w0_alignment(u0, v0, settings.top_r, factors=(b, a))


def _measure_group(items: list[_Item], w0_svd: list[SVD], settings: Settings) -> list[dict[str, Any]]:
    """The measures of items of one shape, batched: one dict per item with the values of :data:`MEASURES`,
    and ``u`` (ΔW's top-r left singular vectors, r = ``top_r`` clipped to its rank) and ``s`` (its singular
    values)."""
    shape = tuple(items[0].w.shape)
    w = torch.stack([it.w for it in items])
    w0 = torch.stack([it.w0 for it in items])
    u0, v0 = torch.stack([d.u for d in w0_svd]), torch.stack([d.v for d in w0_svd])
    intr = intruder_count(svd_dense(w).u, u0, top_k=settings.top_k, epsilon=settings.epsilon)
    out: list[dict[str, Any]] = [{} for _ in items]
    for idx in _batches(items):
        sel = torch.tensor(idx, device=w.device)
        d, align = _delta_measures([items[i] for i in idx], w0[sel], u0[sel], v0[sel], settings)
        rank = numerical_rank(d.s, shape)
        r = rank.clamp(max=settings.top_r)
        keep = (torch.arange(min(settings.top_r, d.s.shape[-1]), device=w.device) < r.unsqueeze(-1)).to(w.dtype)
        u, v = d.u[..., :keep.shape[-1]] * keep.unsqueeze(-2), d.v[..., :keep.shape[-1]] * keep.unsqueeze(-2)
        fro = d.s.norm(dim=-1)
        amp = amplification(w0[sel], u, v, fro)
        erank, srank = effective_rank(d.s, energy=settings.energy), stable_rank(d.s)
        for j, i in enumerate(idx):
            out[i] = {"intruders": int(intr[i]), "effective_rank": int(erank[j]), "stable_rank": float(srank[j]),
                      "amplification": float(amp[j]), "w0_alignment": float(align[j]), "dW_rank": int(rank[j]),
                      "dW_fro": float(fro[j]), "u": d.u[j, :, :int(r[j])], "s": d.s[j]}
    return out


def run_measures(snaps: RunSnapshots, settings: Settings, cache: _W0Cache,
                 device: torch.device) -> tuple[list[dict[str, Any]], list[str]]:
    """Every measure of every measurable (step, matrix) of one run: one dict per (step, matrix) with
    ``step``, ``matrix`` and the values of :data:`MEASURES` (plus ``u``, ``s``: ΔW's top singular vectors and
    its singular values, on the CPU), and the problems met."""
    problems: list[str] = []
    summaries_only: set[str] = set()
    w0_meta = snaps.meta.get("w0")
    w0_key = str((w0_meta.get("checksum") if isinstance(w0_meta, dict) else None) or snaps.run_dir)
    rows: list[dict[str, Any]] = []
    for step in (s for s in snaps.steps if s > 0):
        items = _items(snaps, step, settings, device, problems, summaries_only)
        by_shape: dict[tuple[int, ...], list[_Item]] = {}
        for it in items:
            by_shape.setdefault(tuple(it.w.shape), []).append(it)
        for group in by_shape.values():
            w0_svd = cache.get(w0_key, [it.name for it in group], [it.w0 for it in group])
            for it, values in zip(group, _measure_group(group, w0_svd, settings)):
                values["u"], values["s"] = values["u"].cpu(), values["s"].cpu()
                rows.append({"step": it.step, "matrix": it.name, **values})
    if summaries_only:
        problems.append(f"{snaps.run_dir}: {len(summaries_only)} dense matrices stored only as per-row/column "
                        "summaries at some steps (no ΔW there); set snapshot.full_weights to their types (and "
                        "snapshot.full_steps=null) to analyse them")
    return rows, list(dict.fromkeys(problems))


# ------------------------------------------------------------------------------------------------ many runs


def compute(runs: pd.DataFrame, settings: Settings = Settings()) -> SpectraResult:
    """The measures of every run in ``runs`` (:func:`load_run_table`): see :class:`SpectraResult`. A run
    without snapshots, or whose files are bad, is named in ``problems``; the others go on."""
    device = device_for(settings.device)
    cache = _W0Cache()
    frames, spectra, problems = [], [], []
    bases: dict[tuple[str, str], Tensor] = {}
    for run in runs.to_dict("records"):
        try:
            snaps = open_snapshots(run["run_dir"])
        except SnapshotError as e:
            problems.append(str(e))
            continue
        rows, more = run_measures(snaps, settings, cache, device)
        problems += more
        if not rows:
            continue
        ident = {c: run.get(c) for c in RUN_COLUMNS}
        matrices = snaps.matrices[["label", "layer", "type", "form"]]
        final = max(r["step"] for r in rows)
        for r in rows:
            if r["step"] == final:
                bases[(run["run_dir"], r["matrix"])] = r["u"]
                spectra.append(pd.DataFrame({**ident, "matrix": r["matrix"], "i": range(1, len(r["s"]) + 1),
                                             "sigma": r["s"].numpy()}))
        wide = pd.DataFrame([{k: v for k, v in r.items() if k not in ("u", "s")} for r in rows])
        wide = wide.join(matrices, on="matrix")
        long = wide.melt(id_vars=["step", "matrix", "label", "layer", "type", "form"], value_vars=list(MEASURES),
                         var_name="measure", value_name="value")
        frames.append(long.assign(**ident)[[*RUN_COLUMNS, "step", "matrix", "label", "layer", "type", "form",
                                            "measure", "value"]])
    measures = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*RUN_COLUMNS, "step", "matrix", "label", "layer", "type", "form", "measure", "value"])
    spectrum = pd.concat(spectra, ignore_index=True) if spectra else pd.DataFrame()
    if not spectrum.empty:
        spectrum = spectrum.merge(measures[["run_dir", "matrix", "layer", "type"]].drop_duplicates(),
                                  on=["run_dir", "matrix"], how="left")
    return SpectraResult(measures, spectrum, bases, problems, settings)


def final_values(measures: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last snapshot step (the trained weights)."""
    if measures.empty:
        return measures
    last = measures.groupby("run_dir")["step"].transform("max")
    return measures[measures["step"] == last]


def per_run(measures: pd.DataFrame, matrices: Optional[set[str]] = None) -> pd.DataFrame:
    """One row per run (RUN_COLUMNS) and measure column: the mean over its tracked matrices (or over
    ``matrices`` only) at its final step — the statistic whose mean over seeds the claims compare."""
    f = final_values(measures)
    if matrices is not None:
        f = f[f["matrix"].isin(matrices)]
    if f.empty:
        return pd.DataFrame(columns=[*RUN_COLUMNS, *MEASURES])
    ident = f.drop_duplicates("run_dir").set_index("run_dir")[[c for c in RUN_COLUMNS if c != "run_dir"]]
    wide = f.pivot_table(index="run_dir", columns="measure", values="value", aggfunc="mean")
    return ident.join(wide).reset_index()


# ------------------------------------------------------------------------------------------------ conditions


def condition_keys(runs: pd.DataFrame) -> pd.Series:
    """One key per run for what it is apart from its seed: ``method|budget|lr`` within a group."""
    return (runs["method"].astype(str) + "|" + runs["budget"].map(_num) + "|" + runs["lr"].map(_num)
            + "|" + group_keys(runs))


def group_keys(runs: pd.DataFrame) -> pd.Series:
    """Runs that may be compared: same task, model and number of steps."""
    return runs["task"].astype(str) + "|" + runs["model"].astype(str) + "|" + runs["total_steps"].map(_num)


def _num(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):g}"


def condition_labels(runs: pd.DataFrame) -> pd.Series:
    """``LoRA r=8 lr=0.0005``: the method's recorded label, its budget, and its lr where that method ran with
    several lrs (read from the run records; no method named here)."""
    from analysis.labels import method_label

    several = runs.groupby("method")["lr"].transform(lambda x: x.nunique() > 1)
    out = []
    for r, many in zip(runs.to_dict("records"), several):
        lbl = method_label(r["method"], r.get("budget"), label=r.get("method_label"))
        out.append(lbl + (f" lr={float(r['lr']):g}" if many and r.get("lr") is not None else ""))
    return pd.Series(out, index=runs.index)


def reference_methods(measures: pd.DataFrame) -> list[str]:
    """The methods whose matrices have the ``dense`` form (the weight itself is trained: full fine-tuning),
    the reference ΔW of the "method vs full FT" similarities."""
    return sorted(measures.loc[measures["form"] == DENSE, "method"].astype(str).unique())


# ------------------------------------------------------------------------------------------------ similarity

#: the kinds of run pairs whose ΔW subspaces are compared: the same configuration at two seeds, one method at
#: two budgets (same seed, lr), a method against the reference (full fine-tuning: dense form; same seed)
SIMILARITY_KINDS = ("seed", "rank", "reference")


def run_pairs(runs: pd.DataFrame, reference: Iterable[str]) -> list[tuple[str, str, str]]:
    """(kind, run_dir a, run_dir b) for every pair of :data:`SIMILARITY_KINDS` among ``runs`` (one group each)."""
    ref = set(map(str, reference))
    r = runs.assign(cond=condition_keys(runs), group=group_keys(runs)).sort_values(["seed", "run_dir"])
    out: list[tuple[str, str, str]] = []
    for _, g in r.groupby("cond", sort=False):
        out += [("seed", a, b) for a, b in itertools.combinations(g["run_dir"], 2)]
    for (_, seed), g in r.groupby(["group", "seed"], sort=False):
        rows = g.to_dict("records")
        for a, b in itertools.permutations(rows, 2):
            if str(b["method"]) in ref and str(a["method"]) not in ref:
                out.append(("reference", a["run_dir"], b["run_dir"]))
            elif (a["method"] == b["method"] and _num(a["lr"]) == _num(b["lr"]) and _num(a["budget"])
                  and _num(b["budget"]) and float(a["budget"]) < float(b["budget"])):
                out.append(("rank", a["run_dir"], b["run_dir"]))
    return out


def similarities(result: SpectraResult, runs: pd.DataFrame) -> pd.DataFrame:
    """φ(ΔW_a, ΔW_b, i, j) of every matrix both runs of a :func:`run_pairs` pair have, at their final steps,
    with i, j = ``top_r`` clipped to each ΔW's rank (LoRA §7.2 with the top singular directions of ΔW's column
    space). Columns: kind, run_a, run_b, cond_a, cond_b (labels), seed_a, seed_b, method_a, method_b, matrix,
    layer, type, i, j, phi."""
    cols = ["kind", "run_a", "run_b", "cond_a", "cond_b", "seed_a", "seed_b", "method_a", "method_b", "matrix",
            "layer", "type", "i", "j", "phi"]
    have = runs[runs["run_dir"].isin({d for d, _ in result.bases})]
    if have.empty:
        return pd.DataFrame(columns=cols)
    have = have.assign(cond_label=condition_labels(have)).set_index("run_dir")
    where = result.measures.drop_duplicates("matrix").set_index("matrix")[["layer", "type"]]
    names: dict[str, list[str]] = {}
    for d, m in result.bases:
        names.setdefault(d, []).append(m)
    rows = []
    for kind, a, b in run_pairs(have.reset_index(), reference_methods(result.measures)):
        ra, rb = have.loc[a], have.loc[b]
        for m in sorted(set(names[a]) & set(names[b])):
            ua, ub = result.bases[(a, m)], result.bases[(b, m)]
            if ua.shape[-1] == 0 or ub.shape[-1] == 0:
                continue
            phi = float(subspace_similarity(ua.unsqueeze(0), ub.unsqueeze(0), ua.shape[-1], ub.shape[-1])[0])
            rows.append({"kind": kind, "run_a": a, "run_b": b, "cond_a": ra["cond_label"], "cond_b": rb["cond_label"],
                         "seed_a": ra["seed"], "seed_b": rb["seed"], "method_a": ra["method"], "method_b": rb["method"],
                         "matrix": m, "layer": where.at[m, "layer"], "type": where.at[m, "type"],
                         "i": ua.shape[-1], "j": ub.shape[-1], "phi": phi})
    return pd.DataFrame(rows, columns=cols)
