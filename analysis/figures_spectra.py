"""``python -m analysis figures spectra RUNS… [-o DIR]``: the weight-analysis suite on every run with snapshots.

For each run, snapshot step and tracked matrix (any method: the recorded snapshot form says how W and ΔW are
rebuilt) the measures of :mod:`analysis.spectra`; the subspace similarities of ΔW across seeds, ranks and against
full fine-tuning (the dense form); the claims of ``claims/spectra.yaml`` (or ``--claims``) decided over seeds.

Writes into ``-o/--out`` (default: a new ``./analysis-figures-spectra-<time>/``; never into the run folders):
``spectra_measures.csv`` (run, seed, step, layer, matrix type, measure, value, …), ``spectra_per_run.csv`` (each
run's mean over matrices at its final step), ``spectra_spectrum.csv``, ``spectra_similarity.csv``,
``spectra_claims.csv`` and ``spectra.md`` (verdicts, settings, the command, problems), and the figures as PNG +
PDF + CSV: ``spectra_intruders_vs_rank``, ``spectra_intruders_vs_lr``, ``spectra_spectrum``,
``spectra_similarity_{seed,rank,reference}``, ``spectra_over_steps``. ``--wandb on|auto``: the figures and tables
into the W&B run ``figures-spectra-<group>`` of each tracked sweep (:func:`analysis.table.publish_to_sweeps`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import pandas as pd

from analysis import spectra as SP
from analysis import spectra_claims as C
from analysis.errors import BadOption
from analysis.outputs import out_folder

log = logging.getLogger(__name__)
STEM = "spectra"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures spectra``."""
    d = SP.Settings()
    parser.add_argument("runs", nargs="+", help="run folders or folders above them (sweeps)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="output folder (default: a new ./analysis-figures-spectra-<time>/)")
    parser.add_argument("--top-k", type=int, default=d.top_k, help=f"intruders among W's top k (PEFT: {d.top_k})")
    parser.add_argument("--epsilon", type=float, default=d.epsilon,
                        help=f"intruder threshold on the best |cos| with W0's singular vectors (PEFT: {d.epsilon})")
    parser.add_argument("--energy", type=float, default=d.energy, help=f"effective rank's energy fraction ({d.energy})")
    parser.add_argument("--top-r", type=int, default=d.top_r,
                        help=f"r of ΔW's top-r (amplification, similarity) and W0's top-r (alignment) ({d.top_r})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    parser.add_argument("--claims", type=Path, default=C.CLAIMS_FILE, help=f"claims file (default {C.CLAIMS_FILE})")
    parser.add_argument("--include-unfinished", action="store_true", help="also use runs that are not done")
    parser.add_argument("--wandb", choices=("off", "on", "auto"), default="off",
                        help="log figures and tables to W&B (run figures-spectra-<group>): off, on, or auto = when "
                             "the runs were tracked")


def settings(args: argparse.Namespace) -> SP.Settings:
    """The checked settings (BadOption naming the option)."""
    if args.top_k < 1:
        raise BadOption(f"--top-k: must be >= 1, got {args.top_k}")
    if args.top_r < 1:
        raise BadOption(f"--top-r: must be >= 1, got {args.top_r}")
    for name, v in (("--epsilon", args.epsilon), ("--energy", args.energy)):
        if not (math.isfinite(v) and 0 < v <= 1):
            raise BadOption(f"{name}: must be in (0, 1], got {v}")
    if args.device != "auto" and not args.device.startswith(("cpu", "cuda")):
        raise BadOption(f"--device: {args.device!r}; use auto, cpu or cuda[:N]")
    return SP.Settings(top_k=args.top_k, epsilon=args.epsilon, energy=args.energy, top_r=args.top_r, device=args.device)


def draw(res: SP.SpectraResult, runs: pd.DataFrame, per_run: pd.DataFrame, sims: pd.DataFrame,
         out: Path) -> dict[str, Path]:
    """Every figure the data allows, as PNG + PDF + CSV; name -> PNG path."""
    from analysis.figure_files import save_figure
    from analysis.plots import spectra as P

    figs = []
    for x in ("budget", "lr"):
        if per_run[x].nunique() > 1 or (x == "budget" and per_run[x].notna().any()):
            figs.append((f"intruders_vs_{'rank' if x == 'budget' else x}", P.measure_vs(per_run, "intruders", x)))
    if not res.spectrum.empty:
        figs.append(("spectrum", P.spectrum_figure(res.spectrum, runs)))
    titles = {"seed": "φ of ΔW between seeds (same configuration)",
              "rank": "φ of ΔW between ranks (same method, lr and seed)",
              "reference": "φ of ΔW to full fine-tuning's (same seed), per matrix type"}
    for kind, title in titles.items():
        if (sims["kind"] == kind).any():
            figs.append((f"similarity_{kind}", P.heatmap_figure(P.similarity_matrix(sims, kind), title)))
    figs.append(("over_steps", P.steps_figure(res.measures, runs)))
    pngs = {}
    for name, (fig, data) in figs:
        pngs[name] = save_figure(fig, out, f"{STEM}_{name}", data)[0]
    return pngs


def main(args: argparse.Namespace) -> int:
    """Measure, decide, draw; 0 when something was measured, 1 when no run had measurable snapshots."""
    cfg = settings(args)
    claims = C.load_claims(args.claims)
    out = out_folder(args.out, "-o/--out", "figures-spectra")
    runs, problems = SP.load_run_table(args.runs, include_unfinished=args.include_unfinished)
    res = SP.compute(runs, cfg)
    problems += res.problems
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if res.measures.empty:
        print(f"error: no measurable snapshots in {' '.join(map(str, args.runs))} (runs need snapshots; full FT needs "
              "snapshot.full_weights)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    runs = runs[runs["run_dir"].isin(set(res.measures["run_dir"]))].reset_index(drop=True)
    per_run = SP.per_run(res.measures)
    sims = SP.similarities(res, runs)
    verdicts = C.evaluate(claims, res.measures, runs, sims)
    res.measures.to_csv(out / f"{STEM}_measures.csv", index=False)
    per_run.to_csv(out / f"{STEM}_per_run.csv", index=False)
    res.spectrum.to_csv(out / f"{STEM}_spectrum.csv", index=False)
    sims.to_csv(out / f"{STEM}_similarity.csv", index=False)
    verdicts.to_csv(out / f"{STEM}_claims.csv", index=False)
    pngs = draw(res, runs, per_run, sims, out)
    table = C.markdown(verdicts)
    notes = [f"{len(runs)} runs, {res.measures[['run_dir', 'step', 'matrix']].drop_duplicates().shape[0]} snapshots of "
             f"matrices. Settings: intruders top_k={cfg.top_k}, epsilon={cfg.epsilon} (PEFT's); effective rank at "
             f"{cfg.energy:g} of the energy; top_r={cfg.top_r}. Per run: the mean over its matrices at its final "
             "snapshot; claims: a vs b over seeds (analysis.stats.decide; Holm within each claim).",
             f"Command: `{getattr(args, 'command_line', 'python -m analysis figures spectra ...')}`",
             *(f"Problem: {p}" for p in problems)]
    (out / f"{STEM}.md").write_text(table + "\n\n" + "\n\n".join(notes) + "\n")
    print(table)
    print(f"wrote {out}/{STEM}_*.csv, {STEM}.md and {len(pngs)} figures (PNG + PDF + CSV)")
    if args.wandb != "off":
        from analysis.table import publish_to_sweeps

        tables = {"spectra/per_run": per_run, "spectra/claims": verdicts.astype(str)}
        for folder in publish_to_sweeps(runs["run_dir"], out, name="figures-spectra", force=args.wandb == "on",
                                        files={f"spectra/{k}": p for k, p in pngs.items()}, tables=tables):
            print(f"W&B: {folder}")
    return 0
