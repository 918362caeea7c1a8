"""``python -m analysis figures adalora RUNS… | --from-peft-json FILE``: AdaLoRA's rank allocation.

For each condition (task, model, budget, run length; seeds pooled) it writes each figure as PNG + PDF +
the CSV of what it draws (layers 1-based, as drawn):

* ``adalora_<cond>_heatmap``: the paper's Figure 3 (final rank, x = layer, y = Wq Wk Wv Wo (Wg) Wf1 Wf2, mean
  ± std over seeds in each cell); beside it ``_summary.csv`` / ``_summary.tex``: mean rank and budget
  share per matrix type, FFN vs attention and top vs bottom third of the layers (the LaTeX caption is the
  one-line verdict against the paper);
* ``adalora_<cond>_steps``: the same heatmap at chosen steps (small multiples, one colour bar);
* ``adalora_<cond>_time``: rank over time per matrix type (one line per seed below 3 seeds, ± std band
  from 3), and the budget schedule (formula and measured: one line per seed below 3 seeds, a min–max band
  from 3) over its residual panel (measured − formula);
* data CSV files: final ranks per cell (layers 0-based as in the module names), per-run shares, the
  verdict summary, rank over time, the budget.

``--from-peft-json FILE`` draws the heatmap of a PEFT ``method_comparison`` result (or of an adapter's
``adapter_config.json``) from its ``rank_pattern``, with per-type totals in ``..._by_type.csv``.

``--wandb on|auto`` also puts the PNGs and the ``_summary.csv`` tables into the W&B run
``figures-adalora-<group>`` of each tracked sweep (:func:`analysis.table.publish_to_sweeps`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from analysis import ranks as R
from analysis.figure_files import save_figure
from analysis.outputs import out_folder
from analysis.plots.style import first, setup_line
from analysis.render import latex_escape
from analysis.table import BadOption, publish_to_sweeps
from harness.families import MATRIX_TYPES

log = logging.getLogger(__name__)

#: the figure's name, from this module's (figures_<name>): its command word, report section and file prefix
NAME = __name__.rpartition("figures_")[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``figures adalora``."""
    parser.add_argument("runs", nargs="*", help="run folders or folders above them (sweeps)")
    parser.add_argument("--from-peft-json", metavar="FILE", action="append", default=[],
                        help="a PEFT method_comparison result or adapter_config.json with a rank_pattern (repeatable)")
    parser.add_argument("-o", "--output", "--out", dest="out", type=Path, default=None,
                        help="output folder (default: a new ./analysis-figures-adalora-<time>/; never the run folders)")
    parser.add_argument("--steps", default=None,
                        help="comma-separated steps for the small multiples (default: 4 spread over the budget phase)")
    parser.add_argument("--include-unfinished", action="store_true", help="also draw runs that are not done")
    parser.add_argument("--wandb", choices=("off", "on", "auto"), default="off",
                        help="log the figures and summary tables to W&B (a run named figures-adalora-<group> in the "
                             "runs' project and group, reused by later calls; its files under --out): off (default), "
                             "on, or auto = when the runs were tracked with W&B")


def by_type(final: pd.DataFrame) -> pd.DataFrame:
    """Total and mean final rank per heatmap row (per run, then mean over runs)."""
    per_run = final.groupby(["run_dir", "row", "type"])["rank"].agg(total="sum", mean="mean", matrices="count")
    out = per_run.groupby(["row", "type"]).mean().reset_index()
    out["row"] = pd.Categorical(out["row"], R.row_order(out["row"]), ordered=True)
    return out.sort_values("row").reset_index(drop=True)


def summary_table(summary: pd.DataFrame, types: Sequence[str] = MATRIX_TYPES) -> pd.DataFrame:
    """The verdict's numbers as a display table (written beside the heatmap as CSV and LaTeX, never drawn in
    it): mean rank per matrix, share of the final budget and top-minus-bottom-third rank difference, per
    matrix type and for FFN / attention / top and bottom third, each ``mean ±half-width`` of the Student-t
    interval over runs (no ± with one run). ``summary`` is :func:`analysis.ranks.summarize_shares`."""

    def cell(key: str, pct: bool = False) -> str:
        if key not in summary.index or pd.isna(summary.loc[key, "mean"]):
            return "–"
        m, k = summary.loc[key, "mean"], summary.loc[key, "n"]
        half = (summary.loc[key, "high"] - summary.loc[key, "low"]) / 2 if "high" in summary else math.nan
        f = 100.0 if pct else 1.0
        txt = f"{f * m:.0f}%" if pct else f"{m:.2f}"
        if k > 1 and half == half:
            txt += f" ±{f * half:.0f}" if pct else f" ±{half:.2f}"
        return txt

    cols = [t for t in types if f"mean_{t}" in summary.index and pd.notna(summary.loc[f"mean_{t}", "mean"])]
    groups = {"FFN": "ffn", "attention": "attn", "top third": "top", "bottom third": "bottom"}
    rows = {
        "mean rank per matrix": [cell(f"mean_{t}") for t in cols] + [cell(f"{g}_mean") for g in groups.values()],
        "share of the final budget": [cell(f"share_{t}", True) for t in cols]
        + [cell(f"{g}_share", True) for g in groups.values()],
        "top third − bottom third (rank)": [cell(f"topdiff_{t}") for t in cols]
        + [cell("topdiff_ffn"), cell("topdiff_attn"), "", ""],
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=[*cols, *groups]).rename_axis("quantity")


def write_summary(summary: pd.DataFrame, verdict_line: str, out: Path, stem: str) -> list[Path]:
    """:func:`summary_table` as ``<stem>_summary.csv`` and ``<stem>_summary.tex`` (the verdict line as the
    LaTeX caption); returns the paths."""
    table = summary_table(summary)
    paths = [out / f"{stem}_summary.csv", out / f"{stem}_summary.tex"]
    table.to_csv(paths[0])
    tex = table.map(latex_escape).rename(index=latex_escape, columns=latex_escape)
    tex.index.name = latex_escape(table.index.name)
    paths[1].write_text(tex.to_latex(caption=latex_escape(verdict_line), label=f"tab:{stem}", escape=False),
                        encoding="utf-8")
    return paths


def heatmap_cells(ranks: pd.DataFrame) -> pd.DataFrame:
    """The heatmap's cells as drawn: :func:`analysis.ranks.heatmap_long` with 1-based layers."""
    cells = R.heatmap_long(ranks)
    return cells.assign(layer=cells["layer"].astype(int) + 1)


def condition_title(what: str, ranks: pd.DataFrame) -> str:
    """``AdaLoRA final ranks, b(T)/n = 4 (initial 6)`` over ``MiniLM-L6 · RTE · 1200 steps · 3 seeds``."""
    target, init = first(ranks, "target_r"), ranks["init_r"].max() if "init_r" in ranks else None
    if target is not None:
        what += f", b(T)/n = {target:g}" + (f" (initial {init:g})" if init is not None and init == init else "")
    seeds = ranks["run_dir"].nunique()
    setup = setup_line(model=first(ranks, "model"), task=first(ranks, "task"), steps=first(ranks, "total_steps"),
                       seeds=seeds)
    return f"{what}\n{setup}" + (", mean ± std per cell" if seeds > 1 and "final" in what else "")


def time_data(curves: pd.DataFrame, per_run: pd.DataFrame, measured: pd.DataFrame, formula: pd.DataFrame,
              budget_runs: pd.DataFrame) -> pd.DataFrame:
    """Every line of the time figure in one long frame: ``panel`` (rank, budget, residual), ``series``
    (matrix type / ``type run`` / formula / measured / ``measured run``), step, value, low, high; the per-run
    lines only below 3 runs, where they are drawn."""
    parts = [pd.DataFrame({"panel": "rank", "series": curves["type"].astype(str), "step": curves["step"],
                           "value": curves["mean"], "low": curves["mean"] - curves["std"],
                           "high": curves["mean"] + curves["std"]})]
    if per_run["run_dir"].nunique() < 3:
        parts.append(pd.DataFrame({"panel": "rank", "series": per_run["type"].astype(str) + " " + per_run["run_dir"],
                                   "step": per_run["step"], "value": per_run["rank"]}))
    parts.append(pd.DataFrame({"panel": "budget", "series": "measured", "step": measured["step"],
                               "value": measured["kept_mean"], "low": measured["kept_min"],
                               "high": measured["kept_max"]}))
    if not formula.empty:
        parts.append(pd.DataFrame({"panel": "budget", "series": "formula", "step": formula["step"],
                                   "value": formula["formula"]}))
    parts.append(pd.DataFrame({"panel": "residual", "series": "measured − formula", "step": measured["step"],
                               "value": measured["kept_mean"] - measured["formula"],
                               "low": measured["kept_min"] - measured["formula"],
                               "high": measured["kept_max"] - measured["formula"]}))
    if budget_runs["run_dir"].nunique() < 3:
        residual = budget_runs["kept"] - budget_runs["formula"]
        for panel, value in (("budget", budget_runs["kept"]), ("residual", residual)):
            parts.append(pd.DataFrame({"panel": panel, "series": "measured " + budget_runs["run_dir"],
                                       "step": budget_runs["step"], "value": value}))
    return pd.concat(parts, ignore_index=True)


def draw_condition(long: pd.DataFrame, headers: dict[str, dict[str, Any]], out: Path, label: str,
                   steps: list[int] | None) -> tuple[list[Path], str]:
    """All figures and CSV files of one condition; returns the written paths and the verdict line."""
    from analysis.plots import adalora as P

    final = R.final_ranks(long)
    mean, std, n = R.heatmap_table(final)
    shares = R.allocation_shares(final)
    summary = R.summarize_shares(shares)
    v = R.verdict(shares)
    stem = f"adalora_{label}"
    fig = P.figure3(mean, std, n, title=condition_title("AdaLoRA final ranks", final),
                    vmax=float(final["init_r"].max()))
    written = save_figure(fig, out, f"{stem}_heatmap", heatmap_cells(final))
    written += write_summary(summary, v["line"], out, stem)

    R.heatmap_long(final).to_csv(out / f"{stem}_final_ranks.csv", index=False)
    shares.to_csv(out / f"{stem}_shares.csv", index=False)
    summary.assign(verdict=v["line"]).to_csv(out / f"{stem}_verdict.csv", index_label="quantity")
    by_type(final).to_csv(out / f"{stem}_by_type.csv", index=False)
    written += [out / f"{stem}_{k}.csv" for k in ("final_ranks", "shares", "verdict", "by_type")]

    if "phase" in long.columns and long["step"].nunique() > 1:
        chosen = steps or R.default_steps(long)
        snap = R.at_steps(long, chosen)
        tables, cells = [], []
        for s in chosen:
            sub = snap[snap["at"] == s]
            if sub.empty:
                continue
            m, sd, k = R.heatmap_table(sub)
            rec = sorted(sub["step"].unique())
            title = f"step {rec[0]}" if len(rec) == 1 else f"last mask step ≤ {s}"
            tables.append((title, m, sd, k))
            cells.append(heatmap_cells(sub).assign(panel=title, at=s))
        if tables:
            axes = P.rank_heatmap_grid(tables, vmax=float(long["init_r"].max()))
            axes[0].figure.suptitle(condition_title("AdaLoRA ranks at chosen steps", long), fontsize=10)
            written += save_figure(axes[0].figure, out, f"{stem}_steps", pd.concat(cells, ignore_index=True))

        curves = R.rank_over_time(long)
        per_run = long.groupby(["run_dir", "seed", "step", "type"], dropna=False, observed=True)["rank"].mean()
        per_run = per_run.reset_index()
        measured, formula = R.budget_curve(long, headers)
        budget_runs = R.budget_per_run(long)
        h = headers.get(str(long["run_dir"].iloc[0]), {})
        fig = P.time_figure(curves, measured, formula, per_run=per_run, budget_runs=budget_runs,
                            target=h.get("target_r"), init=h.get("init_r"),
                            suptitle=condition_title("AdaLoRA allocation over time", long))
        written += save_figure(fig, out, f"{stem}_time", time_data(curves, per_run, measured, formula, budget_runs))
        curves.to_csv(out / f"{stem}_rank_over_time.csv", index=False)
        measured.to_csv(out / f"{stem}_budget.csv", index=False)
        written += [out / f"{stem}_rank_over_time.csv", out / f"{stem}_budget.csv"]
    return written, v["line"]


def write_family(conds: Sequence[tuple[str, pd.DataFrame]], out: Path) -> list[Path]:
    """The claims of every condition drawn as declared Holm families (:mod:`analysis.allocation_family`):
    ``adalora_family.csv`` and ``adalora_family.md``; prints the table."""
    from analysis import allocation_family as F

    table = F.family_table([(label, sub, R.allocation_shares(R.final_ranks(sub))) for label, sub in conds])
    table.to_csv(out / "adalora_family.csv", index=False)
    text = F.render_markdown(table)
    (out / "adalora_family.md").write_text(text)
    print(text)
    return [out / "adalora_family.csv", out / "adalora_family.md"]


def _peft_base_model(path: Path) -> Optional[str]:
    """The base model's name (last part of ``base_model_name_or_path``) of a PEFT result or adapter config."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg = data.get("run_info", {}).get("peft_config", data) if isinstance(data, dict) else {}
    name = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    return str(name).rstrip("/").rsplit("/", 1)[-1] if name else None


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
    step = first(final, "step")
    title = condition_title("AdaLoRA final ranks, PEFT result", final.assign(model=_peft_base_model(path),
                                                                             total_steps=step or None))
    written = save_figure(P.figure3(mean, None, None, title=title, vmax=float(final["init_r"].max())), out,
                          f"{stem}_heatmap", heatmap_cells(final))
    written += write_summary(R.summarize_shares(shares), v["line"], out, stem)
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
    out = out_folder(args.out, "-o/--output", "figures-adalora")
    print(f"writing into {out}")
    written: list[Path] = []
    run_dirs: list[str] = []
    for f in args.from_peft_json:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        paths, line = draw_peft_json(path, out)
        print(f"{path.name}: {line}")
        print("\n".join(f"  wrote {w}" for w in paths))
        written += paths
    if args.runs:
        long = R.load_allocations(args.runs, include_unfinished=args.include_unfinished)
        headers = R.load_headers(args.runs)
        run_dirs = list(long["run_dir"].astype(str).unique())
        conds = R.conditions(long, NAME)
        for label, sub in conds:
            paths, line = draw_condition(sub, headers, out, label, steps)
            print(f"{label} ({sub['run_dir'].nunique()} runs): {line}")
            print("\n".join(f"  wrote {w}" for w in paths))
            written += paths
        if len(conds) > 1:
            written += write_family(conds, out)
    if args.wandb != "off":
        files = {f"figures_adalora/{p.stem}": p for p in written
                 if p.suffix == ".png" or p.name.endswith("_summary.csv")}
        for folder in publish_to_sweeps(run_dirs, out, name="figures-adalora", force=args.wandb == "on", files=files):
            print(f"W&B: {folder}")
    return 0
