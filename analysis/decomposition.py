"""DoRA's magnitude/direction analysis from run folders: rebuild merged weights, ΔM/ΔD, correlations.

Reads ``<run>/snapshots`` (see :mod:`harness.snapshots`). ΔM and ΔD follow PAPERS.md (DoRA, Eqs. 3–4)
against W0, with the norms taken along one of two axes, named by meaning:

* ``out`` — one norm per **output feature** (a row of torch's (out, in) weight): the paper's ‖·‖_c (a column
  of its d×k matrix), PEFT's ``lora_magnitude_vector``. The paper's figure is on this axis.
* ``in`` — one norm per **input feature** (a column of torch's weight), shown beside it for contrast.

(The snapshot index stores them as ``*_row`` / ``*_col``, torch's layout; this module renames them.)

Statistics follow "seeds are the unit": the paper's r is Pearson's r pooled over all (layer, checkpoint)
points of one run; each run (seed) gives one r and one slope, and the headline is their mean over seeds with
a Student-t interval (r averaged on Fisher's z scale). Pooling points of several seeds is shown beside it, labelled descriptive.
Everything here is pure: DataFrames in, DataFrames out; only the CLI writes files.

A missing or corrupt snapshot file raises :class:`SnapshotError` naming it; the collecting functions
catch it, report it in their ``problems`` list, and go on with the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import load as st_load
from scipy import stats as _st

from analysis import stats as S
from analysis.compare import not_learned, with_variants
from analysis.labels import method_display, method_order_key
from harness.record import BadRecord, read_run
from harness.snapshot_format import DENSE, DENSE_SUMMARY, INDEX_FILE, META_FILE, STATS, form_of, rebuild, summarize
from harness.w0store import read_w0

log = logging.getLogger(__name__)

AXES: tuple[str, ...] = ("out", "in")
#: What each axis means, for tables, figure labels and file notes.
AXIS_LABELS: dict[str, str] = {
    "out": "per output feature (the paper's ‖·‖_c, PEFT's magnitude)",
    "in": "per input feature",
}
#: snapshot index names (torch layout) → analysis names (meaning)
_RENAME: dict[str, str] = {"dM_row": "dM_out", "dD_row": "dD_out", "dM_col": "dM_in", "dD_col": "dD_in"}
#: DoRA paper, Figure 2, as data (claims/dora_fig2.yaml): the matrix type and axis it is drawn for, and per
#: method (by recorded name) its label in the figure, r and axis ranges
PAPER_FILE = Path(__file__).resolve().parent.parent / "claims" / "dora_fig2.yaml"
_PAPER = yaml.safe_load(PAPER_FILE.read_text(encoding="utf-8"))
#: the paper's Figure 2 is drawn for this matrix type and this axis only; other types/axes have no anchor
PAPER_TYPE, PAPER_AXIS = str(_PAPER["matrix_type"]), str(_PAPER["axis"])
#: Pearson correlation of ΔM with ΔD over the (layer, checkpoint) points of one fine-tuning run (VL-BART)
PAPER_CORRELATION: Mapping[str, float] = MappingProxyType(
    {m: float(v["pearson"]) for m, v in _PAPER["methods"].items()})
#: axis ranges (ΔD low, ΔD high, ΔM low, ΔM high)
PAPER_RANGES: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {m: tuple(float(x) for x in v["ranges"]) for m, v in _PAPER["methods"].items()})
#: the figure's name for a method (else the method's recorded label)
PAPER_LABELS: Mapping[str, str] = MappingProxyType({m: str(v["label"]) for m, v in _PAPER["methods"].items()})


class SnapshotError(Exception):
    """A snapshot file is missing, unreadable or does not match its checksum (the message names it)."""


# ----------------------------------------------------------------------------------------------------------
# one run's snapshots


@dataclass
class RunSnapshots:
    """The snapshots of one run folder: ``meta`` (meta.json), ``index`` (one row per step × matrix)."""

    run_dir: Path
    meta: dict[str, Any]
    index: pd.DataFrame
    _files: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def folder(self) -> Path:
        return self.run_dir / "snapshots"

    @property
    def steps(self) -> list[int]:
        """Snapshot steps present in the index (0 = W0 and the initial factors)."""
        return sorted(int(s) for s in self.index["step"].unique())

    @cached_property
    def matrices(self) -> pd.DataFrame:
        """One row per tracked matrix: name, label, layer, type, kind, form, shape, dtype, scale, rank (``form``
        inferred from the stored tensors for folders written before forms were recorded)."""
        entries = [{**m, "form": form_of(m)} for m in self.meta["matrices"]]
        return pd.DataFrame(entries).set_index("name", drop=False)

    def _checked(self, fname: str, expected: Optional[str]) -> dict[str, torch.Tensor]:
        if fname in self._files:
            return self._files[fname]
        path = self.folder / fname
        if not path.is_file():
            raise SnapshotError(f"{path}: snapshot file missing")
        data = path.read_bytes()
        if expected is not None:
            got = "sha256:" + hashlib.sha256(data).hexdigest()
            if got != expected:
                raise SnapshotError(f"{path}: checksum mismatch (file corrupt or changed after the run); "
                                    f"expected {expected[:19]}…, got {got[:19]}…")
        try:
            tensors = st_load(data)
        except Exception as e:  # noqa: BLE001 - any parse error means a broken file
            raise SnapshotError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        self._files[fname] = tensors
        return tensors

    def _w0_tensors(self) -> dict[str, torch.Tensor]:
        """The W0 file's tensors, from the run's own file or the shared store (harness.w0store.read_w0)."""
        if "w0" not in self._files:
            try:
                path, data = read_w0(self.meta["w0"], self.folder)
            except FileNotFoundError as e:
                raise SnapshotError(str(e)) from None
            try:
                self._files["w0"] = st_load(data)
            except Exception as e:  # noqa: BLE001 - any parse error means a broken file
                raise SnapshotError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        return self._files["w0"]

    def w0(self, name: str) -> torch.Tensor:
        """W0 (out, in) of a tracked matrix, as stored (in the run, or in the W0 store it references)."""
        return self._w0_tensors()[name]

    def tensors(self, step: int, name: str) -> dict[str, torch.Tensor]:
        """The stored tensors of one matrix at one step (``A``, ``B``, ``m``, ``E``; full FT summaries/``W``)."""
        rows = self.index[(self.index["step"] == step) & (self.index["matrix"] == name)]
        if rows.empty:
            raise KeyError(f"{self.run_dir}: no snapshot of {name} at step {step}; steps are {self.steps}")
        r = rows.iloc[0]
        data = self._checked(str(r["file"]), str(r["checksum"]))
        prefix = name + "/"
        return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}

    def verify(self) -> list[str]:
        """Check every file against its checksum; one message per bad file (empty when all are good)."""
        problems = []
        try:
            self._w0_tensors()
        except SnapshotError as e:
            problems.append(str(e))
        for fname, digest in self.index[["file", "checksum"]].drop_duplicates().itertuples(index=False, name=None):
            try:
                self._checked(fname, digest)
            except SnapshotError as e:
                problems.append(str(e))
        return problems

    def merged_weight(self, name: str, step: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The merged (effective) weight (out, in) of ``name`` at ``step``, rebuilt from W0 and the step's tensors
        by the matrix's form (:mod:`harness.snapshot_format`): e.g. LoRA W0 + s·BA, DoRA m ⊙ V/||V|| with one norm
        per output feature (V = W0 + s·BA); a dense form (full FT) is the stored matrix (only where
        ``snapshot.full_weights`` asked for it; otherwise a KeyError says so).
        """
        info = self.matrices.loc[name]
        t = self.tensors(step, name)
        if info["form"] == DENSE and "W" not in t:
            raise KeyError(f"{self.run_dir}: full FT stored only per-row/column summaries of {name} at step {step}; "
                           f"set snapshot.full_weights=[{info['type']}] to keep the matrix")
        w0 = self.w0(name).to(dtype)
        return rebuild(str(info["form"]), w0, {k: v.to(dtype) for k, v in t.items()}, float(info["scale"]))

    def recompute(self, name: str, step: int) -> dict[str, float]:
        """ΔM/ΔD (both axes; snapshot-index names ``*_row`` = per output feature, ``*_col`` = per input
        feature) of ``name`` at ``step`` recomputed in float64 from the files.

        Adapters (and full FT with a stored matrix): from the rebuilt weight, with ‖ΔW‖_F, relative change and
        stable rank too. Full FT otherwise: from the stored per-row/column norm changes and distances
        (‖ΔW‖_F, relative change and stable rank are then NaN: take them from the index).
        """
        info = self.matrices.loc[name]
        t = self.tensors(step, name)
        if info["form"] != DENSE or "W" in t:
            w0 = self.w0(name).to(torch.float64)
            stats, _ = summarize(w0.unsqueeze(0), self.merged_weight(name, step).unsqueeze(0))
            return dict(zip(STATS, map(float, stats[0])))
        missing = [k for k in DENSE_SUMMARY if k not in t]
        if missing:
            raise SnapshotError(f"{self.folder}: step {step} lacks {missing} of {name}")
        out = {"dM_row": t["row_dm"].double().abs().mean(), "dD_row": t["row_dd"].double().mean(),
               "dM_col": t["col_dm"].double().abs().mean(), "dD_col": t["col_dd"].double().mean()}
        return {k: float(out[k]) if k in out else math.nan for k in STATS}


def open_snapshots(run_dir: str | Path) -> RunSnapshots:
    """The snapshots of a run folder; SnapshotError naming the file when meta.json or the index is bad."""
    run_dir = Path(run_dir)
    folder = run_dir / "snapshots"
    meta_path, index_path = folder / META_FILE, folder / INDEX_FILE
    for p in (meta_path, index_path):
        if not p.is_file():
            raise SnapshotError(f"{p}: missing (was the run made with snapshot.enabled=false, or did it fail?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SnapshotError(f"{meta_path}: unreadable ({e})") from None
    try:
        index = pd.read_parquet(index_path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise SnapshotError(f"{index_path}: unreadable ({type(e).__name__}: {e})") from None
    return RunSnapshots(run_dir, meta, index)


# ----------------------------------------------------------------------------------------------------------
# many runs -> one table of points


def _matches_type(df: pd.DataFrame, matrix_type: Optional[str]) -> pd.Series:
    if matrix_type is None or matrix_type == "all":
        return pd.Series(True, index=df.index)
    return (df["type"] == matrix_type) | df["matrix"].str.endswith("." + matrix_type) | (df["label"] == matrix_type)


def decomposition_table(runs: pd.DataFrame, *, matrix_type: Optional[str] = "Wq", source: str = "tensors",
                        include_step0: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per (run, step, matrix) with ΔM/ΔD on both axes, for runs of ``analysis.load.load_runs``.

    ``source="tensors"`` recomputes every value in float64 from the files (checksums verified; a bad file's
    rows are left out and named in the returned problems); ``"index"`` takes the online values as they are.
    Columns: run_dir, panel (see :func:`panels`), method, seed, lr, total_steps (when ``runs`` has them), step,
    checkpoint (1.. over the non-zero steps), matrix, label, layer, type, ``dM_out dD_out dM_in dD_in`` (see
    :data:`AXIS_LABELS`), ``dW_fro dW_rel stable_rank`` and, for ``tensors``, ``online_<stat>`` (the index's
    value) for comparison.
    """
    if source not in ("tensors", "index"):
        raise ValueError(f"source must be 'tensors' or 'index', got {source!r}")
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for run in runs.itertuples(index=False):
        try:
            snaps = open_snapshots(run.run_dir)
        except SnapshotError as e:
            problems.append(str(e))
            continue
        idx = snaps.index[_matches_type(snaps.index, matrix_type)]
        if not include_step0:
            idx = idx[idx["step"] > 0]
        if idx.empty:
            problems.append(f"{snaps.folder}: no snapshot of matrix type {matrix_type!r} "
                            f"(types: {sorted(snaps.index['type'].unique())})")
            continue
        idx = idx.copy()
        steps = sorted(s for s in idx["step"].unique() if s > 0)
        idx["checkpoint"] = idx["step"].map({s: i + 1 for i, s in enumerate(steps)}).fillna(0).astype(int)
        if source == "tensors":
            rows, bad = [], set()
            for r in idx.itertuples(index=False):
                if r.file in bad:
                    continue
                try:
                    rows.append({**snaps.recompute(r.matrix, r.step), "matrix": r.matrix, "step": r.step})
                except SnapshotError as e:
                    bad.add(r.file)
                    problems.append(f"{e} — its points (step {r.step}) are left out")
            if not rows:
                continue
            online = idx.rename(columns={k: f"online_{k}" for k in STATS})
            idx = online.merge(pd.DataFrame(rows), on=["matrix", "step"], how="inner")
        idx.insert(0, "run_dir", str(run.run_dir))
        idx.insert(1, "method", run.method)
        idx.insert(2, "seed", run.seed)
        idx.insert(3, "lr", getattr(run, "lr", math.nan))
        idx.insert(4, "total_steps", getattr(run, "total_steps", math.nan))
        idx.insert(5, "variant", getattr(run, "variant", "") or "")
        idx.insert(6, "not_learned", getattr(run, "not_learned", pd.NA))
        frames.append(idx)
    if not frames:
        return pd.DataFrame(), problems
    out = pd.concat(frames, ignore_index=True)
    out.insert(1, "panel", panels(out))
    out = out.rename(columns={**_RENAME, **{f"online_{k}": f"online_{v}" for k, v in _RENAME.items()}})
    stats = [_RENAME.get(k, k) for k in STATS]
    keep = ["run_dir", "panel", "method", "seed", "lr", "total_steps", "variant", "not_learned", "step", "checkpoint", "matrix", "label",
            "layer", "type", "kind", "rank", *stats, *[c for c in out.columns if c.startswith("online_")]]
    return out[[c for c in keep if c in out.columns]], problems


def panels(points: pd.DataFrame) -> pd.Series:
    """One figure panel per method and recorded setting: runs of a method that differ in anything but the seed
    (``variant``, from :func:`analysis.compare.with_variants` over the runs' configurations, e.g.
    ``lora · method.lr=0.001``) are separate panels, never pooled as seeds. Points without ``variant`` (files
    written before it) are split by lr and run length where a method was run with several."""
    labels = points["method"].astype(str)
    if "variant" in points and points["variant"].fillna("").astype(bool).any():
        v = points["variant"].fillna("").astype(str)
        return labels.where(v == "", labels + " · " + v)
    for m in points["method"].unique():
        sel = points["method"] == m
        for key, fmt in (("lr", "lr={:g}"), ("total_steps", "{:g} steps")):
            if key in points and points.loc[sel, key].nunique() > 1:
                labels[sel] = labels[sel] + " " + points.loc[sel, key].map(fmt.format)
    return labels


# ----------------------------------------------------------------------------------------------------------
# statistics: per run (seed) Pearson r and slope of ΔM on ΔD, then mean and t-interval over seeds


def pearson_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(Pearson r, slope, intercept) of the least-squares line y = a + b·x (``scipy.stats.linregress``);
    NaN where undefined. x, y: (n,). The guards stay here: linregress raises for a constant x and calls
    r = 0 for a constant y, where no correlation is defined (NaN keeps such a run out of the mean)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    fit = _st.linregress(x, y)
    r = float(fit.rvalue) if np.ptp(y) > 0 else math.nan
    return r, float(fit.slope), float(fit.intercept)


def per_run_fits(points: pd.DataFrame, *, axis: str = "out") -> pd.DataFrame:
    """One row per (panel, run): the paper's statistic for that run and axis.

    ``pearson``, ``slope``: Pearson r and least-squares slope of ΔM on ΔD over all (layer, checkpoint)
    points of the run (the paper's pooling); ``n_points``; ``pearson_within_checkpoint``: the mean over the
    run's checkpoints of r across layers at one checkpoint (the layer effect without the drift that moves
    ΔM and ΔD up together over training; not the paper's number).
    """
    _check_axis(axis)
    xk, yk = f"dD_{axis}", f"dM_{axis}"
    if "panel" not in points:
        points = points.assign(panel=points["method"])
    rows = []
    for (panel, run_dir), g in points.groupby(["panel", "run_dir"], sort=False):
        r, slope, _ = pearson_slope(g[xk].to_numpy(), g[yk].to_numpy())
        within = [pearson_slope(c[xk].to_numpy(), c[yk].to_numpy())[0]
                  for _, c in g.groupby("checkpoint") if len(c) >= 3]
        within = [w for w in within if math.isfinite(w)]
        rows.append({"panel": panel, "method": str(g["method"].iloc[0]), "axis": axis, "run_dir": run_dir,
                     "seed": g["seed"].iloc[0], "n_points": len(g), "pearson": r, "slope": slope,
                     "pearson_within_checkpoint": float(np.mean(within)) if within else math.nan,
                     "not_learned": _run_not_learned(g)})
    return pd.DataFrame(rows)


def _run_not_learned(g: pd.DataFrame) -> Any:
    """The run's not-learned flag from its points (True / False; NA when not recorded: older points files)."""
    if "not_learned" not in g or g["not_learned"].isna().all():
        return pd.NA
    return bool(g["not_learned"].dropna().astype(bool).iloc[0])


def paper_anchor(method: str, matrix_types: Iterable[str], axis: str) -> float:
    """The paper's r for ``method`` when the points are the paper's quantity (query matrices, norms per
    output feature); NaN otherwise (the paper gives no number to compare with)."""
    types = set(matrix_types)
    if types == {PAPER_TYPE} and axis == PAPER_AXIS:
        return PAPER_CORRELATION.get(method, math.nan)
    return math.nan


def correlation_table(points: pd.DataFrame, *, axis: str = "out", confidence: float = 0.95) -> pd.DataFrame:
    """One row per panel (method, split by lr / run length where needed): seed-level statistics of ΔM on ΔD.

    Headline (seeds are the unit): ``slope`` = mean over runs of the per-run slopes of :func:`per_run_fits`
    with a Student-t interval over runs; ``pearson`` = the mean of the per-run r on Fisher's z scale with its
    t-interval there, mapped back (:func:`analysis.stats.correlation_interval`); NaN bounds with one run
    (descriptive only); ``n_seeds``; ``pearson_within_checkpoint`` likewise (its own interval). Descriptive beside it:
    ``pooled_pearson`` / ``pooled_slope`` over the points of all runs together (no interval: the points of one
    run are not independent). ``paper_pearson`` only where the points are the paper's quantity (see
    :func:`paper_anchor`), and its two answers (:func:`analysis.stats.claim`, on Fisher's z, Holm over the
    panels with a paper value in this call: one figure): ``verdict`` — agrees / disagrees / inconclusive with
    the paper's sign by ``p_holm`` (``p``: t-test of mean z = 0), ``descriptive`` with one seed, ``no paper value``
    elsewhere — and ``value`` — ``inside`` / ``outside``: the paper's r inside the interval or not, with
    ``p_value`` (t-test of mean z = atanh(paper r)) and ``p_value_holm``. ``attrs["family"]``: how many verdicts
    the Holm family holds. Measured ΔD/ΔM ranges with the paper's beside them.
    """
    _check_axis(axis)
    S.check_confidence(confidence)
    xk, yk = f"dD_{axis}", f"dM_{axis}"
    if "panel" not in points:
        points = points.assign(panel=points["method"])
    fits = per_run_fits(points, axis=axis)
    rows: list[dict[str, Any]] = []
    claims: list[tuple[int, S.Claim]] = []
    for panel in ordered_panels(points):
        g = points[points["panel"] == panel]
        f = fits[fits["panel"] == panel]
        m = str(g["method"].iloc[0])
        ivs = {"pearson": S.correlation_interval(f["pearson"], confidence=confidence),
               "slope": S.t_interval(f["slope"], confidence=confidence),
               "pearson_within_checkpoint": S.correlation_interval(f["pearson_within_checkpoint"], confidence=confidence)}
        pooled_r, pooled_slope, _ = pearson_slope(g[xk].to_numpy(), g[yk].to_numpy())
        paper = paper_anchor(m, g["type"].unique() if "type" in g else (), axis)
        pr = PAPER_RANGES.get(m, (math.nan,) * 4) if math.isfinite(paper) else (math.nan,) * 4
        if math.isfinite(paper):
            claims.append((len(rows), S.claim(f["pearson"], paper, paper=paper, alpha=1 - confidence, fisher=True)))
        row: dict[str, Any] = {"panel": panel, "method": m, "axis": axis, "n_runs": g["run_dir"].nunique(),
                               "not_learned": int(f["not_learned"].fillna(False).astype(bool).sum()),
                               "n_seeds": int(f["seed"].nunique()), "n_points": len(g),
                               "points_per_run": int(f["n_points"].median()) if len(f) else 0}
        for k, iv in ivs.items():
            row.update({k: iv.mean, f"{k}_low": iv.low, f"{k}_high": iv.high, f"{k}_std": iv.std, f"{k}_n": iv.n})
        row.update({
            "interval": (f"{confidence * 100:g}% Student-t over seeds (r: on Fisher's z scale)" if ivs["pearson"].n > 1
                         else "descriptive (1 seed)"),
            "pooled_pearson": pooled_r, "pooled_slope": pooled_slope,
            "paper_pearson": paper, "verdict": "no paper value", "p": math.nan, "p_holm": math.nan,
            "value": "no paper value", "p_value": math.nan, "p_value_holm": math.nan,
            "dD_min": float(g[xk].min()), "dD_max": float(g[xk].max()),
            "dM_min": float(g[yk].min()), "dM_max": float(g[yk].max()),
            "paper_dD_min": pr[0], "paper_dD_max": pr[1], "paper_dM_min": pr[2], "paper_dM_max": pr[3],
        })
        rows.append(row)
    judged = S.claim_family([c for _, c in claims], [c.paper for _, c in claims])
    for (i, _), c in zip(claims, judged):
        rows[i].update(verdict=c.sign, p=c.p, p_holm=c.p_adj, value=c.value, p_value=c.p_value,
                       p_value_holm=c.p_value_adj)
    out = pd.DataFrame(rows)
    out.attrs["family"] = len(claims)
    return out


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES} ({'; '.join(f'{a}: {t}' for a, t in AXIS_LABELS.items())}), "
                         f"got {axis!r}")


def markdown_table(stats: pd.DataFrame, *, confidence: float = 0.95) -> str:
    """The correlation table in Markdown: seed-level r and slope with intervals, the verdict against the
    paper where the paper has a number, and the descriptive pooled r beside them."""
    pct = f"{confidence * 100:g}%"

    def iv(v: float, lo: float, hi: float, fmt: str) -> str:
        if not math.isfinite(v):
            return "n/a"
        s = format(v, fmt)
        return s + (f" [{format(lo, fmt)}, {format(hi, fmt)}]" if math.isfinite(lo) and math.isfinite(hi) else " (1 seed)")

    def rng(lo: float, hi: float) -> str:
        return f"{lo:.3g}–{hi:.3g}" if math.isfinite(lo) else "—"

    lines = [
        f"| method | norms | seeds | points / run | r, mean over seeds ({pct} CI) | slope ΔM/ΔD ({pct} CI) | "
        f"paper r | sign (p, Holm p) | paper r inside the CI? (p) | r within checkpoint ({pct} CI) | "
        "pooled r (descriptive) | ΔD range | paper ΔD | ΔM range | paper ΔM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in stats.itertuples(index=False):
        verdict = f"**{r.verdict}**" if r.verdict in ("agrees", "disagrees") else r.verdict
        if math.isfinite(r.p):
            verdict += f" (p {_p(r.p)}, Holm {_p(r.p_holm)})"
        if getattr(r, "not_learned", 0):
            verdict += f"; rests on {r.not_learned} run(s) that did not learn"
        value = r.value + (f" (p {_p(r.p_value)})" if math.isfinite(r.p_value) else "")
        lines.append(
            f"| {panel_label(r.panel)} | {AXIS_LABELS[r.axis]} | {r.n_seeds} | {r.points_per_run} | "
            f"{iv(r.pearson, r.pearson_low, r.pearson_high, '+.2f')} | {iv(r.slope, r.slope_low, r.slope_high, '.3g')} | "
            f"{'—' if not math.isfinite(r.paper_pearson) else format(r.paper_pearson, '+.2f')} | {verdict} | {value} | "
            f"{iv(r.pearson_within_checkpoint, r.pearson_within_checkpoint_low, r.pearson_within_checkpoint_high, '+.2f')} | "
            f"{'n/a' if not math.isfinite(r.pooled_pearson) else format(r.pooled_pearson, '+.2f')} | "
            f"{rng(r.dD_min, r.dD_max)} | {rng(r.paper_dD_min, r.paper_dD_max)} | "
            f"{rng(r.dM_min, r.dM_max)} | {rng(r.paper_dM_min, r.paper_dM_max)} |"
        )
    n = int(stats.attrs.get("family", (stats["paper_pearson"].notna()).sum()))
    if n:
        lines += ["", f"Sign verdicts: Holm over the {n} verdicts of this figure (t-test of the mean Fisher z of r "
                      "against 0); the paper's value: inside or outside the interval, with the p of the t-test of the "
                      "mean z against atanh(paper r)."]
    return "\n".join(lines)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def collect(paths: Iterable[str | Path], *, matrix_type: Optional[str] = "Wq", source: str = "tensors",
            include_unfinished: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Points of every run found under ``paths`` (see :func:`decomposition_table`) and the problems met."""
    from analysis.load import load_runs

    runs = load_runs(paths, include_unfinished=include_unfinished)
    problems = [f"{d}: left out ({why})" for d, why in runs.skipped]
    if runs.table.empty:
        return pd.DataFrame(), problems
    table = runs.table.copy()
    lrs, totals, configs = [], [], {}
    for d in table["run_dir"]:
        try:
            rec = read_run(Path(d), derive=False)
        except (OSError, BadRecord):
            rec = {}
        cfg = rec.get("config", {})
        configs[d] = cfg
        lrs.append((cfg.get("train") or {}).get("lr") or (cfg.get("method") or {}).get("lr") or math.nan)
        totals.append(rec.get("total_steps", math.nan))
    table["lr"], table["total_steps"] = lrs, totals
    table = with_variants(table, configs, by=("method",))  # every recorded setting that differs, but the seed
    table["not_learned"] = not_learned(table)  # dev metric within chance: flagged in the statistics it feeds
    points, more = decomposition_table(table, matrix_type=matrix_type, source=source)
    return points, problems + more


def ordered_panels(points: pd.DataFrame) -> list[str]:
    """Panels in the paper's order (FT, LoRA, DoRA, AdaLoRA, then any other), by lr and steps within a method."""
    cols = [c for c in ("panel", "method", "lr", "total_steps") if c in points]
    first = points[cols].drop_duplicates("panel" if "panel" in points else "method")
    key = first.apply(lambda r: (*method_order_key(r["method"], points),
                                 r.get("lr", 0) if pd.notna(r.get("lr", 0)) else 0,
                                 r.get("total_steps", 0) if pd.notna(r.get("total_steps", 0)) else 0), axis=1)
    return [str(p) for p in first.assign(_k=key).sort_values("_k")["panel" if "panel" in points else "method"]]


def panel_label(panel: str, points: Optional[pd.DataFrame] = None) -> str:
    """``full lr=0.0002`` -> ``FT lr=0.0002``; ``lora · method.lr=0.001`` -> ``LoRA · method.lr=0.001``: the
    paper's name for the method (:data:`PAPER_LABELS`), else its recorded label (of ``points`` when given)."""
    method, _, rest = str(panel).partition(" ")
    name = PAPER_LABELS.get(method) or str(method_display(method, points)["method_label"])
    return name + (" " + rest if rest else "")
