"""``python -m analysis figures dora RUNS…``: DoRA's Figure 2 (ΔM against ΔD) from run folders.

One panel per method (FT, LoRA, DoRA, AdaLoRA), x = ΔD, y = ΔM, a point per (layer, checkpoint) of the
chosen matrix type (``--type``, query by default), colour = layer, marker = checkpoint, the fitted line,
Pearson r and slope with 95% bootstrap intervals (over points, and over seeds when there are several).
Both axes of the norms are drawn by default (``row``: per output feature, DoRA's magnitude axis; ``col``:
per input feature). Values are recomputed in float64 from the snapshot files (``--source tensors``) or
taken from the index as computed online (``--source index``).

Writes into ``--out`` (default ``<first RUN>/figures``), for T = type:
``dora_fig2_<T>_<axis>.png|pdf``, ``dora_fig2_<T>_points.csv``, ``dora_fig2_<T>_stats.csv`` and
``dora_fig2_<T>.md`` (the correlation table with the paper's values beside, and the problems met).
A missing or corrupt snapshot file is named on stderr and its points are left out; the rest goes on.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from analysis import decomposition as D

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures dora``."""
    parser.add_argument("runs", nargs="+", help="run folders or folders above them (sweeps)")
    parser.add_argument("--type", default="Wq", dest="matrix_type",
                        help="matrix type (Wq Wk Wv Wo Wf1 Wf2) or module suffix, e.g. value; default Wq (the paper's)")
    parser.add_argument("--axis", choices=("row", "col", "both"), default="both",
                        help="norms per output row (DoRA's magnitude axis), per input column, or both (default)")
    parser.add_argument("--source", choices=("tensors", "index"), default="tensors",
                        help="recompute from the snapshot files in float64 (default) or use the online values")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first RUNS>/figures)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")
    parser.add_argument("--wandb", choices=("auto", "off", "offline", "online"), default="auto",
                        help="log the figure and table to W&B; auto: as the runs were tracked (default)")


_TYPE_ALIASES = {"query": "Wq", "key": "Wk", "value": "Wv", "q": "Wq", "k": "Wk", "v": "Wv"}


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=160, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _tracking(points: pd.DataFrame) -> dict[str, Any]:
    """The W&B settings and group of the runs (from their run.json), for ``--wandb auto``."""
    from analysis.load import load_run_record

    for run_dir in points["run_dir"].unique():
        try:
            rec = load_run_record(run_dir)
        except (OSError, ValueError):
            continue
        tr = rec.get("config", {}).get("tracking", {})
        return {**tr, "group": tr.get("group") or rec.get("group")}
    return {}


def log_to_wandb(mode: str, points: pd.DataFrame, stats: pd.DataFrame, images: dict[str, Path], out: Path,
                 name: str) -> Optional[str]:
    """An analysis run in the runs' W&B project and group (the sweep), with the figures and the table.

    Returns the run's folder, or None when W&B is off or failed (a warning; never an error).
    """
    tr = _tracking(points)
    if mode == "off":
        return None
    if mode == "auto":
        if not tr.get("wandb") or tr.get("mode") == "disabled":
            return None
        mode = tr.get("mode", "offline")
    try:
        import wandb

        run = wandb.init(project=tr.get("project", "lora-harness"), entity=tr.get("entity"), group=tr.get("group"),
                         job_type="analysis", name=name, dir=str(out), mode=mode, reinit="finish_previous",
                         config={"runs": sorted(points["run_dir"].unique())})
        run.log({**{f"dora_fig2/{k}": wandb.Image(str(p)) for k, p in images.items()},
                 "dora_fig2/correlations": wandb.Table(dataframe=stats.astype({"sign_matches": str})),
                 "dora_fig2/points": wandb.Table(dataframe=points.drop(columns=["run_dir"]))})
        folder = str(getattr(run, "dir", out))
        run.finish()
        return folder
    except Exception as e:  # noqa: BLE001 - tracking never fails an analysis
        log.warning("wandb logging failed (%s: %s); files are written anyway", type(e).__name__, e)
        return None


def main(args: argparse.Namespace) -> int:
    """Draw the figure(s); exit 0 when a figure was made (problems are reported), 1 when nothing could be."""
    import matplotlib

    matplotlib.use("Agg")
    from analysis.plots.dora import dora_figure

    mtype = _TYPE_ALIASES.get(args.matrix_type, args.matrix_type)
    points, problems = D.collect(args.runs, matrix_type=mtype, source=args.source,
                                 include_unfinished=args.include_unfinished)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if points.empty:
        hint = ("; the tensor files are gone: --source index draws the values computed during training"
                if args.source == "tensors" and any("snapshot file missing" in p for p in problems) else "")
        print(f"error: no snapshot points of matrix type {mtype!r} in {' '.join(args.runs)}{hint}", file=sys.stderr)
        return 1
    out = args.out or (Path(args.runs[0]) / "figures")
    out.mkdir(parents=True, exist_ok=True)
    axes = ("row", "col") if args.axis == "both" else (args.axis,)
    stats = pd.concat([D.correlation_table(points, axis=a, n_boot=args.boot, seed=args.seed) for a in axes],
                      ignore_index=True)
    stem = f"dora_fig2_{mtype}"
    images: dict[str, Path] = {}
    for a in axes:
        n_seeds = points["seed"].nunique()
        title = (f"ΔM vs ΔD, {mtype}, norms per {'output row' if a == 'row' else 'input column'} — "
                 f"{points['layer'].nunique()} layers × {points['checkpoint'].nunique()} checkpoints × {n_seeds} seed(s)")
        fig = dora_figure(points, stats, axis=a, suptitle=title)
        png, _ = _save(fig, out, f"{stem}_{a}")
        images[f"{mtype}_{a}"] = png
    points.to_csv(out / f"{stem}_points.csv", index=False)
    stats.to_csv(out / f"{stem}_stats.csv", index=False)
    table = D.markdown_table(stats)
    notes = [f"Matrix type {mtype}; {len(points)} points from {points['run_dir'].nunique()} runs; values "
             f"{'recomputed in float64 from the snapshot files' if args.source == 'tensors' else 'as computed online'}; "
             f"intervals: {args.boot} bootstrap resamples. Paper: DoRA Figure 2 (VL-BART, query, 4 checkpoints)."]
    if args.source == "tensors":
        online = [c for c in points.columns if c.startswith("online_")]
        if online:
            worst = max(float(((points[c[7:]] - points[c]).abs() / points[c[7:]].abs().clip(lower=1e-12)).max())
                        for c in online if c[7:] in ("dM_row", "dD_row", "dM_col", "dD_col"))
            notes.append(f"Online (float32, on the training device) vs recomputed (float64): max relative "
                         f"difference of ΔM/ΔD {worst:.1e}.")
    notes += [f"Problem: {p}" for p in problems]
    (out / f"{stem}.md").write_text(table + "\n\n" + "\n\n".join(notes) + "\n")
    print(table)
    print("\n".join(notes[:2]))
    folder = log_to_wandb(args.wandb, points, stats, images, out, name=f"figures-dora-{mtype}")
    print(f"wrote {out}/{stem}_{{{','.join(axes)}}}.png|pdf, {stem}_points.csv, {stem}_stats.csv, {stem}.md"
          + (f"; W&B: {folder}" if folder else ""))
    return 0
