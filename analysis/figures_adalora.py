"""``python -m analysis figures adalora RUNS… | --from-peft-json FILE``: AdaLoRA's rank allocation.

For each condition (task, model, budget, run length; seeds pooled) it writes, as PNG + PDF + CSV:

* ``adalora_<cond>_heatmap``: the paper's Figure 3 (final rank, x = layer, y = Wq Wk Wv Wo Wf1 Wf2, mean
  ± std over seeds in each cell) over a table of mean rank and budget share per matrix type, FFN vs
  attention and top vs bottom third of the layers, titled with the one-line verdict against the paper;
* ``adalora_<cond>_steps``: the same heatmap at chosen steps (small multiples);
* ``adalora_<cond>_time``: rank over time per matrix type, and the budget schedule measured vs formula;
* CSV files: final ranks per cell, per-run shares, the verdict summary, rank over time, the budget.

``--from-peft-json FILE`` draws the heatmap of a PEFT ``method_comparison`` result (or of an adapter's
``adapter_config.json``) from its ``rank_pattern``, with per-type totals in ``..._by_type.csv``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import ranks as R
from analysis.outputs import out_folder
from analysis.table import BadOption

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures adalora``."""
    parser.add_argument("runs", nargs="*", help="run folders or folders above them (sweeps)")
    parser.add_argument("--from-peft-json", metavar="FILE", action="append", default=[],
                        help="a PEFT method_comparison result or adapter_config.json with a rank_pattern (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: a new ./analysis-figures-adalora-<time>/; never the run folders)")
    parser.add_argument("--steps", default=None,
                        help="comma-separated steps for the small multiples (default: 4 spread over the budget phase)")
    parser.add_argument("--include-unfinished", action="store_true", help="also draw runs that are not done")


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def by_type(final: pd.DataFrame) -> pd.DataFrame:
    """Total and mean final rank per heatmap row (per run, then mean over runs)."""
    per_run = final.groupby(["run_dir", "row", "type"])["rank"].agg(total="sum", mean="mean", matrices="count")
    out = per_run.groupby(["row", "type"]).mean().reset_index()
    out["row"] = pd.Categorical(out["row"], R.row_order(out["row"]), ordered=True)
    return out.sort_values("row").reset_index(drop=True)


def draw_condition(long: pd.DataFrame, headers: dict[str, dict[str, Any]], out: Path, label: str,
                   steps: list[int] | None) -> tuple[list[Path], str]:
    """All figures and CSV files of one condition; returns the written paths and the verdict line."""
    from analysis.plots import adalora as P
    import matplotlib.pyplot as plt

    written: list[Path] = []
    final = R.final_ranks(long)
    mean, std, n = R.heatmap_table(final)
    shares = R.allocation_shares(final)
    summary = R.summarize_shares(shares)
    v = R.verdict(shares)
    n_runs = final["run_dir"].nunique()
    last = int(final["step"].max())
    title = f"AdaLoRA final ranks · {label} · step {last} · {n_runs} run{'s' if n_runs != 1 else ''}"
    if n_runs > 1:
        title += " (mean ± std)"
    stem = f"adalora_{label}"
    written += _save(P.figure3(mean, std, n, summary, v["line"], title=title, vmax=float(final["init_r"].max())),
                     out, f"{stem}_heatmap")

    R.heatmap_long(final).to_csv(out / f"{stem}_final_ranks.csv", index=False)
    shares.to_csv(out / f"{stem}_shares.csv", index=False)
    summary.assign(verdict=v["line"]).to_csv(out / f"{stem}_verdict.csv", index_label="quantity")
    by_type(final).to_csv(out / f"{stem}_by_type.csv", index=False)
    written += [out / f"{stem}_{k}.csv" for k in ("final_ranks", "shares", "verdict", "by_type")]

    if "phase" in long.columns and long["step"].nunique() > 1:
        chosen = steps or R.default_steps(long)
        snap = R.at_steps(long, chosen)
        tables = []
        for s in chosen:
            sub = snap[snap["at"] == s]
            if sub.empty:
                continue
            m, sd, k = R.heatmap_table(sub)
            rec = sorted(sub["step"].unique())
            tables.append((f"step {rec[0]}" if len(rec) == 1 else f"last mask step ≤ {s}", m, sd, k))
        if tables:
            axes = P.rank_heatmap_grid(tables, vmax=float(long["init_r"].max()))
            axes[0].figure.suptitle(f"AdaLoRA ranks at chosen steps · {label}", fontsize=10)
            written += _save(axes[0].figure, out, f"{stem}_steps")
            snap.to_csv(out / f"{stem}_steps.csv", index=False)
            written.append(out / f"{stem}_steps.csv")

        curves = R.rank_over_time(long)
        measured, formula = R.budget_curve(long, headers)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
        h = headers.get(str(long["run_dir"].iloc[0]), {})
        P.rank_over_time(curves, ax=a1, target=h.get("target_r"), init=h.get("init_r"))
        P.budget_schedule(measured, formula, ax=a2)
        fig.suptitle(f"AdaLoRA allocation over time · {label}", fontsize=10)
        written += _save(fig, out, f"{stem}_time")
        curves.to_csv(out / f"{stem}_rank_over_time.csv", index=False)
        measured.to_csv(out / f"{stem}_budget.csv", index=False)
        written += [out / f"{stem}_rank_over_time.csv", out / f"{stem}_budget.csv"]
    return written, v["line"]


def draw_peft_json(path: Path, out: Path) -> tuple[list[Path], str]:
    """Heatmap + table + CSV files of one PEFT file's rank pattern."""
    from analysis.plots import adalora as P

    final = R.from_peft_json(path)
    mean, std, n = R.heatmap_table(final)
    shares = R.allocation_shares(final)
    v = R.verdict(shares)
    label = path.stem.removeprefix("adalora--").replace("--", "_")
    if label == "adapter_config":
        label = path.parent.name
    stem = f"adalora_{label}"
    target = final["target_r"].iloc[0]
    title = f"AdaLoRA final ranks · {path.name} · b(T)/n = {target}, init_r = {int(final['init_r'].max())}"
    written = _save(P.figure3(mean, None, None, R.summarize_shares(shares), v["line"], title=title,
                              vmax=float(final["init_r"].max())), out,
                    f"{stem}_heatmap")
    R.heatmap_long(final).to_csv(out / f"{stem}_final_ranks.csv", index=False)
    by_type(final).to_csv(out / f"{stem}_by_type.csv", index=False)
    shares.to_csv(out / f"{stem}_shares.csv", index=False)
    written += [out / f"{stem}_{k}.csv" for k in ("final_ranks", "by_type", "shares")]
    return written, v["line"]


def parse_steps(text: str) -> list[int]:
    """``--steps 100,200``: optimizer steps (integers >= 1); BadOption naming the option otherwise."""
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        raise BadOption(f"--steps: comma-separated whole numbers of optimizer steps, e.g. 100,200,400; got {text!r}") \
            from None
    if any(s < 1 for s in steps):
        raise BadOption(f"--steps: steps count from 1, got {text!r}")
    return steps


def main(args: argparse.Namespace) -> int:
    """Draw every condition found under ``args.runs`` and every ``--from-peft-json`` file."""
    if not args.runs and not args.from_peft_json:
        raise BadOption("give run folders (RUNS…) or --from-peft-json FILE")
    steps = parse_steps(args.steps) if args.steps else None
    out = out_folder(args.out, "--out", "figures-adalora")
    print(f"writing into {out}")
    for f in args.from_peft_json:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        written, line = draw_peft_json(path, out)
        print(f"{path.name}: {line}")
        for w in written:
            print(f"  wrote {w}")
    if args.runs:
        long = R.load_allocations(args.runs, include_unfinished=args.include_unfinished)
        headers = R.load_headers(args.runs)
        for label, sub in R.conditions(long):
            written, line = draw_condition(sub, headers, out, label, steps)
            print(f"{label} ({sub['run_dir'].nunique()} runs): {line}")
            for w in written:
                print(f"  wrote {w}")
    return 0
