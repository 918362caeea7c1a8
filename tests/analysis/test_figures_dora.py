"""``python -m analysis figures dora``: the files it writes, bad files named, W&B logging."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from harness.run_record import RunRecord
from harness.snapshots import step_file
from tests.harness.test_snapshots import snapshot_run


def make_sweep(root: Path, *, methods: tuple[str, ...] = ("full", "lora", "dora"), seeds: tuple[int, ...] = (0, 1),
               wandb: bool = False, lr: float = 1e-4) -> list[Path]:
    """Run folders (run.json done + snapshots at steps 2, 4, 6) as a sweep leaves them, without training."""
    dirs = []
    for method in methods:
        for seed in seeds:
            d = root / f"{method}_s{seed}_lr{lr:g}"
            snapshot_run(d / "snapshots", method, steps=(2, 4, 6))
            rec = RunRecord(d)
            rec.start(method=method, seed=seed, task="sst2", model="tiny_bert", group=root.name,
                      total_steps=6, config={"method": {"name": method, "lr": lr}, "train": {"lr": None},
                              "tracking": {"wandb": wandb, "mode": "offline" if wandb else "disabled", "project": "t"}})
            rec.done()
            dirs.append(d)
    return dirs


def test_figure_files_table_and_paper_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_sweep(tmp_path / "sweep")
    out = tmp_path / "fig"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    for name in ("dora_fig2_Wq_out.png", "dora_fig2_Wq_out.pdf", "dora_fig2_Wq_out.csv", "dora_fig2_Wq_in.png",
                 "dora_fig2_Wq_in.pdf", "dora_fig2_Wq_in.csv", "dora_fig2_Wq_points.csv", "dora_fig2_Wq_per_seed.csv", "dora_fig2_Wq_stats.csv", "dora_fig2_Wq.md"):
        assert (out / name).stat().st_size > 0, name
    points = pd.read_csv(out / "dora_fig2_Wq_points.csv")
    assert len(points) == 3 * 2 * 2 * 3  # methods × seeds × layers × checkpoints (step 0 left out)
    assert set(points["checkpoint"]) == {1, 2, 3} and set(points["type"]) == {"Wq"}
    drawn = pd.read_csv(out / "dora_fig2_Wq_out.csv")  # the figure's own data: what it draws, layers as drawn
    assert len(drawn) == len(points) and sorted(drawn["layer"].unique()) == [1, 2]
    assert drawn["dM"].tolist() == pytest.approx(points["dM_out"].tolist())
    stats = pd.read_csv(out / "dora_fig2_Wq_stats.csv")
    assert set(zip(stats["method"], stats["axis"])) == {(m, a) for m in ("full", "lora", "dora") for a in ("out", "in")}
    assert (stats["n_seeds"] == 2).all() and stats["interval"].str.contains("Student-t over seeds").all()
    # the CSV beside the figure holds each run's r and slope: the headline is re-derivable from it
    per_seed = pd.read_csv(out / "dora_fig2_Wq_per_seed.csv")
    assert len(per_seed) == 3 * 2 * 2  # methods × seeds × axes
    lora = per_seed[(per_seed["method"] == "lora") & (per_seed["axis"] == "out")]["slope"]
    assert stats.set_index(["method", "axis"]).loc[("lora", "out"), "slope"] == pytest.approx(lora.mean())
    assert set(stats.loc[stats["axis"] == "out", "verdict"]) <= {"agrees", "disagrees", "inconclusive"}
    assert (stats.loc[stats["axis"] == "in", "verdict"] == "no paper value").all()
    md = (out / "dora_fig2_Wq.md").read_text()
    assert "| FT |" in md and "-0.62" in md and "+0.83" in md and "-0.31" in md
    assert "Command: `python -m analysis figures dora" in md
    assert "r, mean over seeds" in capsys.readouterr().out


def test_value_matrices_and_one_axis(tmp_path: Path) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,))
    out = tmp_path / "fig"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--type", "value", "--axis", "in",
                 "--out", str(out)]) == 0
    assert (out / "dora_fig2_Wv_in.png").is_file() and not (out / "dora_fig2_Wv_out.png").exists()
    stats = pd.read_csv(out / "dora_fig2_Wv_stats.csv")
    assert stats["pearson_low"].isna().all() and (stats["interval"] == "descriptive (1 seed)").all()


@pytest.mark.parametrize("bad", ["1.5", "0", "-0.1", "nan", "1"])
def test_confidence_outside_0_1_is_refused(tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,))
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--confidence", bad, "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --confidence") and not (tmp_path / "f").exists()


def test_a_corrupt_file_is_named_and_the_figure_still_comes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = make_sweep(tmp_path / "sweep", methods=("lora", "dora"), seeds=(0,))
    bad = dirs[0] / "snapshots" / step_file(4)
    bad.write_bytes(bad.read_bytes()[:100])
    missing = dirs[1] / "snapshots" / "meta.json"
    missing.unlink()
    out = tmp_path / "fig"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert str(bad) in err and str(missing) in err
    points = pd.read_csv(out / "dora_fig2_Wq_points.csv")
    assert set(points["step"]) == {2, 6} and set(points["method"]) == {"lora"}
    assert str(bad) in (out / "dora_fig2_Wq.md").read_text()


def test_nothing_to_draw_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,))
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--type", "Wx", "--out", str(tmp_path / "f")]) == 1
    assert "no snapshot points of matrix type 'Wx'" in capsys.readouterr().err


def test_logged_to_wandb_offline_as_image_and_table(tmp_path: Path) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,), wandb=True)
    out = tmp_path / "fig"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--axis", "out", "--out", str(out), "--wandb", "on"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("*.png")) and list(runs[0].rglob("*.table.json"))
    assert b"figures-dora-Wq-sweep" in next(runs[0].glob("*.wandb")).read_bytes()  # named for the sweep's group


def test_wandb_auto_follows_the_runs_tracking(tmp_path: Path) -> None:
    """--wandb auto (the shared rule of table, report and the figures): nothing for untracked runs, an offline
    run for runs tracked offline."""
    pytest.importorskip("wandb")
    make_sweep(tmp_path / "plain", methods=("lora",), seeds=(0,))
    make_sweep(tmp_path / "tracked", methods=("lora",), seeds=(0,), wandb=True)
    for sweep, logged in (("plain", False), ("tracked", True)):
        out = tmp_path / f"fig_{sweep}"
        assert main(["figures", "dora", str(tmp_path / sweep), "--axis", "out", "--out", str(out),
                     "--wandb", "auto"]) == 0
        assert bool(list((out / "wandb").glob("offline-run-*"))) == logged, sweep


def test_read_only_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Without --out the files go to a new folder under the current directory, printed; the sweep (tracked
    with W&B) is left as it was and nothing is logged to W&B unless asked."""
    sweep = tmp_path / "sweep"
    make_sweep(sweep, methods=("lora",), seeds=(0,), wandb=True)
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["figures", "dora", str(sweep), "--axis", "out"]) == 0
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before
    (out,) = cwd.iterdir()
    assert out.name.startswith("analysis-figures-dora-") and str(out) in capsys.readouterr().out
    assert (out / "dora_fig2_Wq_out.png").is_file() and not (out / "wandb").exists()


def test_a_method_run_at_several_lrs_gets_a_panel_per_lr(tmp_path: Path) -> None:
    make_sweep(tmp_path / "sweep", methods=("full",), seeds=(0,), lr=5e-5)
    make_sweep(tmp_path / "sweep", methods=("full",), seeds=(0,), lr=2e-4)
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,), lr=5e-4)
    out = tmp_path / "fig"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--axis", "out", "--out", str(out)]) == 0
    stats = pd.read_csv(out / "dora_fig2_Wq_stats.csv")
    # every recorded setting that differs but the seed splits a panel, labelled with it
    assert list(stats["panel"]) == ["full · method.lr=5e-05", "full · method.lr=0.0002", "lora"]
    assert "| FT · method.lr=0.0002 |" in (out / "dora_fig2_Wq.md").read_text()


def test_redrawn_from_the_points_file_with_the_same_statistics(tmp_path: Path) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora", "dora"), seeds=(0, 1))
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["figures", "dora", str(tmp_path / "sweep"), "--axis", "out", "--out", str(first)]) == 0
    assert main(["figures", "dora", "--from-points", str(first / "dora_fig2_Wq_points.csv"), "--axis", "out",
                 "--out", str(again)]) == 0
    for name in ("stats", "per_seed", "points"):
        pd.testing.assert_frame_equal(pd.read_csv(again / f"dora_fig2_Wq_{name}.csv"),
                                      pd.read_csv(first / f"dora_fig2_Wq_{name}.csv"), check_exact=True)
    for ext in ("png", "pdf", "csv"):
        assert (again / f"dora_fig2_Wq_out.{ext}").stat().st_size > 0
    assert "--from-points" in (again / "dora_fig2_Wq.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("{d}/sweep", "--from-points", "{d}/p.csv"), "give run folders (RUNS…) or --from-points FILE, not both"),
    ((), "give run folders (RUNS…) or --from-points FILE, not both"),
    (("--from-points", "{d}/missing.csv"), "--from-points: {d}/missing.csv: no such file"),
    (("--from-points", "{d}/p.csv"), "is not a points file of figures dora (no column checkpoint"),
])
def test_from_points_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                               message: str) -> None:
    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0,))
    pd.DataFrame({"run_dir": ["a"], "method": ["lora"], "seed": [0], "layer": [0], "step": [1],
                  "type": ["Wq"]}).to_csv(tmp_path / "p.csv", index=False)
    argv = [a.format(d=tmp_path) for a in args]
    assert main(["figures", "dora", *argv, "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(d=tmp_path) in err[0]


def test_title_names_the_setup_read_from_the_runs(tmp_path: Path) -> None:
    from analysis import decomposition as D
    from analysis.figure_files import with_setup
    from analysis.figures_dora import figure_title

    make_sweep(tmp_path / "sweep", methods=("lora",), seeds=(0, 1))
    points, _ = D.collect([tmp_path / "sweep"], matrix_type="Wq", source="index")
    title = figure_title(with_setup(points), "Wq", "out")
    assert title == ("ΔM vs ΔD of the query matrices (Wq), norms per output feature (the paper's ‖·‖_c, PEFT's "
                     "magnitude)\ntiny BERT · SST-2 · 6 steps · 2 seeds · 2 layers × 3 checkpoints")
