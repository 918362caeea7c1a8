"""``python -m analysis figures adalora``: PNG + PDF + CSV from run folders and from a PEFT result file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from analysis.plots import adalora as P
from tests.analysis.test_ranks import FINAL_A, FINAL_B, PEFT_FILE, make_run

matplotlib.use("Agg")


def cli(*argv: str) -> int:
    return analysis_main(["figures", "adalora", *argv])


def test_registered_as_figures_adalora() -> None:
    from analysis.__main__ import COMMANDS

    assert (("figures", "adalora"), "analysis.figures_adalora", "AdaLoRA rank heatmaps") in COMMANDS


def test_peft_json_heatmap_and_per_type_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--from-peft-json", str(PEFT_FILE), "--out", str(tmp_path)) == 0
    stem = "adalora_llama-3.2-3B-rank32"
    for suffix in ("_heatmap.png", "_heatmap.pdf", "_heatmap.csv", "_summary.csv", "_summary.tex",
                   "_final_ranks.csv", "_by_type.csv", "_shares.csv"):
        assert (tmp_path / f"{stem}{suffix}").stat().st_size > 0, suffix
    rp = json.loads(PEFT_FILE.read_text())["run_info"]["peft_config"]["rank_pattern"]
    by_type = pd.read_csv(tmp_path / f"{stem}_by_type.csv").set_index("row")
    assert by_type.loc["Wq", "total"] == sum(sum(v) for k, v in rp.items() if ".q_proj." in k) == 701
    assert by_type.loc["Wv", "total"] == sum(sum(v) for k, v in rp.items() if ".v_proj." in k) == 1091
    cells = pd.read_csv(tmp_path / f"{stem}_final_ranks.csv")
    assert len(cells) == 56 and cells.groupby("row")["mean"].sum().to_dict() == {"Wq": 701, "Wv": 1091}
    out = capsys.readouterr().out
    assert "FFN n/a" in out and "top descriptive" in out  # one PEFT file = one run: no interval


def test_runs_all_figures_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "0_adalora_s0", seed=0, final=FINAL_A)
    make_run(sweep / "1_adalora_s1", seed=1, final=FINAL_B)
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert cli(str(sweep), "--steps", "4,14,20") == 0
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before  # the runs are only read
    (out,) = cwd.iterdir()  # by default a new folder under the current directory
    assert out.name.startswith("analysis-figures-adalora-")
    stem = "adalora_rte_tiny_b4_T20"
    for kind in ("heatmap", "steps", "time"):
        for ext in ("png", "pdf", "csv"):  # every figure with the data it draws
            assert (out / f"{stem}_{kind}.{ext}").stat().st_size > 0, (kind, ext)
    drawn = pd.read_csv(out / f"{stem}_heatmap.csv")
    assert sorted(drawn["layer"].unique()) == [1, 2, 3]  # 1-based, as the heatmap's axis
    time = pd.read_csv(out / f"{stem}_time.csv")
    assert set(time["panel"]) == {"rank", "budget", "residual"}
    summary = pd.read_csv(out / f"{stem}_summary.csv", index_col="quantity")
    assert list(summary.columns[-4:]) == ["FFN", "attention", "top third", "bottom third"]
    assert summary.loc["share of the final budget", "FFN"] == "38% ±9"
    tex = (out / f"{stem}_summary.tex").read_text()
    assert "\\begin{table}" in tex and "\\caption{FFN (Wf1+Wf2) 38\\%" in tex
    for kind in ("final_ranks", "shares", "verdict", "by_type", "steps", "rank_over_time", "budget"):
        assert (out / f"{stem}_{kind}.csv").is_file(), kind
    cells = pd.read_csv(out / f"{stem}_final_ranks.csv")
    wo = cells[(cells["row"] == "Wo") & (cells["layer"] == 2)].iloc[0]
    assert wo["mean"] == 4.5 and wo["n"] == 2 and wo["min"] == 4 and wo["max"] == 5
    verdict = pd.read_csv(out / f"{stem}_verdict.csv")
    assert "Paper (more to FFN and to top layers): FFN " in verdict["verdict"].iloc[0]
    assert "interval over 2 seeds" in verdict["verdict"].iloc[0]
    assert "rte_tiny_b4_T20 (2 runs)" in capsys.readouterr().out


def test_no_input_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli() == 2
    assert capsys.readouterr().err.startswith("error: give run folders")


def test_plot_functions_take_and_return_axes() -> None:
    import matplotlib.pyplot as plt

    mean = pd.DataFrame([[1.0, 2.0], [0.0, float("nan")]], index=["Wq", "Wf2"], columns=[0, 1])
    std = pd.DataFrame([[0.5, 0.0], [0.0, float("nan")]], index=mean.index, columns=mean.columns)
    n = pd.DataFrame(2, index=mean.index, columns=mean.columns)
    fig, ax = plt.subplots()
    assert P.rank_heatmap(mean, std, n, ax=ax) is ax
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["0\n±0.0", "1\n±0.5", "2\n±0.0"]  # NaN (not adapted) has no label; rank 0 is drawn
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    plt.close(fig)


def tracked(run_dir: Path, group: str) -> Path:
    """Mark a :func:`make_run` folder as tracked offline with W&B in ``group`` (as the harness records it)."""
    rec = json.loads((run_dir / "run.json").read_text())
    rec["config"] = {"tracking": {"wandb": True, "mode": "offline", "project": "t", "group": group}}
    (run_dir / "run.json").write_text(json.dumps(rec))
    return run_dir


def test_wandb_on_logs_the_figures_into_one_reused_run_of_the_group(tmp_path: Path) -> None:
    """--wandb on: the PNGs and the summary table into one offline W&B run named for the figures and the sweep,
    under --out (never in the runs); a second call continues that run."""
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    tracked(make_run(sweep / "0_adalora_s0", seed=0, final=FINAL_A), "mysweep")
    out = tmp_path / "out"
    for _ in range(2):
        assert cli(str(sweep), "--out", str(out), "--wandb", "on") == 0
    assert not list(sweep.rglob("wandb"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs and len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # one run id, resumed
    files = {p.name for r in runs for p in r.rglob("files/**/*") if p.is_file()}
    assert sum(n.endswith(".png") for n in files) >= 3, files  # heatmap, steps, time
    assert "adalora_rte_tiny_b4_T20_summary.csv" in files, files
    raw = b"".join(p.read_bytes() for r in runs for p in r.glob("*.wandb"))
    assert b"figures-adalora-mysweep" in raw and b"mysweep" in raw


def test_wandb_auto_logs_nothing_for_untracked_runs_and_off_is_the_default(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "0_adalora_s0", seed=0, final=FINAL_A)
    out = tmp_path / "auto"  # (the default on these untracked runs logs nothing either: it does not on tracked ones)
    assert cli(str(sweep), "--out", str(out), "--wandb", "auto") == 0
    assert (out / "adalora_rte_tiny_b4_T20_heatmap.png").is_file() and not (out / "wandb").exists()
    tracked(sweep / "0_adalora_s0", "mysweep")
    assert cli(str(sweep), "--out", str(tmp_path / "off")) == 0  # tracked runs, but off by default
    assert not (tmp_path / "off" / "wandb").exists()


def test_a_tiny_llama_adalora_run_has_seven_types(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  one_thread: object) -> None:
    """A real AdaLoRA run on the tiny Llama (2 layers): the heatmap has the decoder's seven types (gate, up and down
    apart), the FFN group of the verdict is Wg + Wf1 + Wf2 (3 of 7 matrices), attention Wq Wk Wv Wo."""
    pytest.importorskip("reasoning_gym")
    from harness.run import run
    from tests.conftest import compose_cfg, method_args
    from tests.harness.problems.test_causal_lm import lm_args

    run_dir = tmp_path / "run"
    run(compose_cfg(lm_args(tmp_path / "rg", *method_args("adalora"), "task.rg.forget=[]", "train.max_steps=6")),
        run_dir)
    assert cli(str(run_dir), "--out", str(tmp_path / "fig")) == 0
    (heatmap,) = (tmp_path / "fig").glob("*_heatmap.csv")
    cells = pd.read_csv(heatmap)
    types = ["Wq", "Wk", "Wv", "Wo", "Wg", "Wf1", "Wf2"]
    assert list(dict.fromkeys(cells["row"])) == types and sorted(set(cells["layer"])) == [1, 2]
    stem = heatmap.name.removesuffix("_heatmap.csv")
    summary = pd.read_csv(tmp_path / "fig" / f"{stem}_summary.csv", index_col=0)
    assert list(summary.columns) == [*types, "FFN", "attention", "top third", "bottom third"]
    shares = pd.read_csv(tmp_path / "fig" / f"{stem}_shares.csv").iloc[0]
    ranks = pd.read_csv(tmp_path / "fig" / f"{stem}_final_ranks.csv")
    ffn = ranks[ranks["type"].isin(["Wg", "Wf1", "Wf2"])]
    assert shares["ffn_uniform"] == pytest.approx(3 / 7)
    assert shares["ffn_share"] == pytest.approx(ffn["mean"].sum() / ranks["mean"].sum())
    assert shares["attn_mean"] == pytest.approx(ranks.loc[ranks["type"].isin(types[:4]), "mean"].mean())
    assert "FFN (Wg+Wf1+Wf2)" in capsys.readouterr().out
