"""``python -m analysis figures dora RUNS…``: DoRA's Figure 2 (ΔM against ΔD) from run folders.

One panel per method (FT, LoRA, DoRA, AdaLoRA), x = ΔD, y = ΔM, a point per (layer, checkpoint) of the
chosen matrix type (``--type``, query by default), colour = layer, marker = checkpoint, the fitted line.
Statistics take the seed as the unit: per run, Pearson r and the slope over its (layer, checkpoint) points
(the paper's pooling); the headline is their mean over seeds with a Student-t interval (none with one
seed: descriptive), and the verdict against the paper's sign (agrees / disagrees / inconclusive) where the
paper gives a number (query matrices, norms per output feature). Both axes of the norms are drawn by
default (``out``: per output feature, the paper's ‖·‖_c and PEFT's magnitude; ``in``: per input feature).
Values are recomputed in float64 from the snapshot files (``--source tensors``) or taken from the index as
computed online (``--source index``).

Writes only into ``--out`` (default: a new ``./analysis-figures-dora-<time>/``; never into the run folders), for
T = type:
``dora_fig2_<T>_<axis>.png|pdf|csv`` (the figure and the points it draws, layers 1-based as drawn),
``dora_fig2_<T>_points.csv`` (every point with all its statistics, layers 0-based as in the module names),
``dora_fig2_<T>_per_seed.csv`` (r and slope of each run), ``dora_fig2_<T>_stats.csv`` (the seed-level
table) and ``dora_fig2_<T>.md`` (the table, the command that made it, and the problems met).
A missing or corrupt snapshot file is named on stderr and its points are left out; the rest goes on.
``--from-points FILE`` redraws all of it from a ``_points.csv`` written earlier (statistics recomputed).
``--wandb on|auto`` also puts the figures and the tables into the W&B run ``figures-dora-<T>-<group>`` of each
tracked sweep (:func:`analysis.table.publish_to_sweeps`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis import decomposition as D
from analysis import stats as S
from analysis.outputs import out_folder
from analysis.table import BadOption, publish_to_sweeps
from harness.families import TYPE_NAMES

log = logging.getLogger(__name__)

#: the figure's name, from this module's (figures_<name>): its command word, report section and file prefix
NAME = __name__.rpartition("figures_")[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures dora``."""
    parser.add_argument("runs", nargs="*", help="run folders or folders above them (sweeps)")
    parser.add_argument("--from-points", metavar="FILE", type=Path, default=None,
                        help="redraw from a dora_fig2_<type>_points.csv written earlier instead of run folders "
                             "(statistics recomputed from its points)")
    parser.add_argument("--type", default="Wq", dest="matrix_type",
                        help="matrix type (Wq Wk Wv Wo Wg Wf1 Wf2) or module suffix, e.g. value; default Wq (the paper's)")
    parser.add_argument("--axis", choices=("out", "in", "both"), default="both",
                        help="norms per output feature (out: the paper's ‖·‖_c, PEFT's magnitude), per input "
                             "feature (in), or both (default)")
    parser.add_argument("--source", choices=("tensors", "index"), default="tensors",
                        help="recompute from the snapshot files in float64 (default) or use the online values")
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None,
                        help="output folder (default: a new ./analysis-figures-dora-<time>/)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the intervals over seeds, in (0, 1) (default 0.95)")
    parser.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")
    parser.add_argument("--wandb", choices=("off", "on", "auto"), default="off",
                        help="log the figures and the table to W&B (a run named figures-dora-<type>-<group> in the "
                             "runs' project and group, reused by later calls; its files under --out): off (default), "
                             "on, or auto = when the runs were tracked with W&B")


_TYPE_ALIASES = {"query": "Wq", "key": "Wk", "value": "Wv", "q": "Wq", "k": "Wk", "v": "Wv"}


def figure_title(points: pd.DataFrame, mtype: str, axis: str) -> str:
    """``ΔM vs ΔD of the query matrices (Wq), norms per output feature`` over the setup line (model, task,
    steps, seeds) and the number of layers and checkpoints; a part the runs do not share is left out."""
    from analysis.plots.style import first, setup_line

    what = f"{TYPE_NAMES[mtype]} matrices ({mtype})" if mtype in TYPE_NAMES else f"{mtype} matrices"
    setup = setup_line(model=first(points, "model"), task=first(points, "task"),
                       steps=first(points, "total_steps"), seeds=points["seed"].nunique())
    shape = f"{points['layer'].nunique()} layers × {points['checkpoint'].nunique()} checkpoints"
    return f"ΔM vs ΔD of the {what}, norms {D.AXIS_LABELS[axis]}\n{' · '.join(p for p in (setup, shape) if p)}"


def read_points(path: Path, mtype: str) -> pd.DataFrame:
    """The points of matrix type ``mtype`` in a ``dora_fig2_<type>_points.csv`` (BadOption when it is not one)."""
    points = pd.read_csv(path, float_precision="round_trip")  # the statistics come out bit-identical
    if "rank" in points:  # whole numbers, empty for full FT
        points["rank"] = points["rank"].astype("Int64")
    need = {"run_dir", "method", "seed", "layer", "checkpoint", "step", "type"}
    if missing := sorted(need - set(points.columns)):
        raise BadOption(f"--from-points: {path} is not a points file of figures dora (no column {', '.join(missing)})")
    if "panel" not in points:
        points["panel"] = D.panels(points)
    return points[points["type"] == mtype].reset_index(drop=True)


def main(args: argparse.Namespace) -> int:
    """Draw the figure(s); exit 0 when a figure was made (problems are reported), 1 when nothing could be."""
    from analysis.figure_files import save_figure, with_setup
    from analysis.plots.dora import dora_figure, figure_data

    try:
        confidence = S.check_confidence(args.confidence)
    except ValueError as e:
        raise BadOption(f"--confidence: {e}") from None
    if bool(args.runs) == bool(args.from_points):
        raise BadOption("give run folders (RUNS…) or --from-points FILE, not both")
    if args.from_points and not args.from_points.is_file():
        raise FileNotFoundError(f"--from-points: {args.from_points}: no such file")
    out = out_folder(args.out, "-o/--output", "figures-dora")
    mtype = _TYPE_ALIASES.get(args.matrix_type, args.matrix_type)
    if args.from_points:
        points, problems = read_points(args.from_points, mtype), []
        origin = f"read from {args.from_points}"
    else:
        points, problems = D.collect(args.runs, matrix_type=mtype, source=args.source,
                                     include_unfinished=args.include_unfinished)
        origin = ("recomputed in float64 from the snapshot files" if args.source == "tensors"
                  else "as computed online")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if points.empty:
        hint = ("; the tensor files are gone: --source index draws the values computed during training"
                if args.source == "tensors" and any("snapshot file missing" in p for p in problems) else "")
        where = args.from_points or " ".join(args.runs)
        print(f"error: no snapshot points of matrix type {mtype!r} in {where}{hint}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    axes = D.AXES if args.axis == "both" else (args.axis,)
    stats = pd.concat([D.correlation_table(points, axis=a, confidence=confidence) for a in axes], ignore_index=True)
    per_seed = pd.concat([D.per_run_fits(points, axis=a) for a in axes], ignore_index=True)
    stem = f"dora_fig2_{mtype}"
    images: dict[str, Path] = {}
    n_seeds = points["seed"].nunique()
    drawn = with_setup(points)
    for a in axes:
        fig = dora_figure(drawn, stats, axis=a, suptitle=figure_title(drawn, mtype, a))
        png, _, _ = save_figure(fig, out, f"{stem}_{a}", figure_data(points, a))
        images[f"{mtype}_{a}"] = png
    drawn.to_csv(out / f"{stem}_points.csv", index=False)
    per_seed.to_csv(out / f"{stem}_per_seed.csv", index=False)
    stats.to_csv(out / f"{stem}_stats.csv", index=False)
    table = D.markdown_table(stats, confidence=confidence)
    notes = [f"Matrix type {mtype}; {len(points)} points from {points['run_dir'].nunique()} runs; values {origin}. "
             f"r and slope: per run over its (layer, checkpoint) points, then the mean over seeds with a "
             f"{confidence * 100:g}% Student-t interval"
             + (" (one seed: descriptive, no interval)." if n_seeds < 2 else ".")
             + f" Sign verdict: agrees / disagrees when the Holm-adjusted p (t-test of mean Fisher z = 0; Holm over "
             f"the {int(stats['paper_pearson'].notna().sum())} verdicts of this figure) is below 5%, else inconclusive;"
             " value: the paper's r inside the interval or not, with the p of the t-test against it."
             f" Paper: DoRA Figure 2 (VL-BART, query matrices, norms per output feature, 4 checkpoints); other "
             "matrix types and the per-input-feature axis have no paper value. 'r within checkpoint' and "
             "'pooled r' are not the paper's statistic.",
             f"Command: `{getattr(args, 'command_line', 'python -m analysis figures dora ...')}`"]
    if args.source == "tensors" or args.from_points:
        online = [c for c in points.columns if c.startswith("online_")]
        if online:
            worst = max(float(((points[c[7:]] - points[c]).abs() / points[c[7:]].abs().clip(lower=1e-12)).max())
                        for c in online if c[7:] in ("dM_out", "dD_out", "dM_in", "dD_in"))
            notes.append(f"Online (float32, on the training device) vs recomputed (float64): max relative "
                         f"difference of ΔM/ΔD {worst:.1e}.")
    notes += [f"Problem: {p}" for p in problems]
    (out / f"{stem}.md").write_text(table + "\n\n" + "\n\n".join(notes) + "\n")
    print(table)
    print("\n".join(notes[:2]))
    print(f"wrote {out}/{stem}_{{{','.join(axes)}}}.png|pdf|csv, {stem}_points.csv, {stem}_per_seed.csv, "
          f"{stem}_stats.csv, {stem}.md")
    if args.wandb != "off":
        tables = {k: t.astype(object).where(t.notna(), None)  # missing values (NA flags, NaN) as nulls
                  for k, t in (("dora_fig2/correlations", stats), ("dora_fig2/points", points.drop(columns=["run_dir"])))}
        for folder in publish_to_sweeps(points["run_dir"], out, name=f"figures-dora-{mtype}",
                                        force=args.wandb == "on", files={f"dora_fig2/{k}": p for k, p in images.items()},
                                        tables=tables):
            print(f"W&B: {folder}")
    return 0
