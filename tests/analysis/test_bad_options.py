"""The analysis CLI's bad-option catalogue: every case exits with status 2 and one ``error:`` line naming the
option and the fix, prints no traceback, writes nothing (no output folder, no change to the inputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis.__main__ import main
from tests.analysis.test_compare import make_sweep
from tests.analysis.test_figures_dora import make_sweep as make_dora_sweep
from tests.analysis.test_ranks import FINAL_A, make_run
from tests.conftest import GLUE


@dataclass(frozen=True)
class Case:
    """One bad command line (``{d}`` = the folder of inputs), what the line must name, a piece of the fix."""

    id: str
    args: tuple[str, ...]
    names: str
    fix: str


RANGE = "a number in (0, 1)"
HELP = "--help lists the options"


def per_command(command: tuple[str, ...], runs: str) -> list[Case]:
    """The option cases shared by ``table`` and ``report``."""
    name = "_".join(command)
    return [Case(f"{name}_{i}", (*command, runs, *args), names, fix) for i, (args, names, fix) in enumerate((
        (("--digits", "-1"), "--digits", "0..12"),
        (("--digits", "nan"), "--digits", HELP),
        (("--digits", "inf"), "--digits", HELP),
        (("--confidence", "nan"), "--confidence", RANGE),
        (("--confidence", "inf"), "--confidence", RANGE),
        (("--confidence", "1"), "--confidence", RANGE),
        (("--confidence", "-0.5"), "--confidence", RANGE),
        (("--metric", "bogus"), "--metric", "these runs have"),
        (("--interval", "wide"), "--interval", HELP),
    ))]


CASES = [
    *per_command(("table",), "{d}/sweep"),
    *per_command(("report",), "{d}/sweep"),
    # -- output paths of table
    Case("table_output_is_a_folder", ("table", "{d}/sweep", "-o", "{d}/sweep"), "-o/--output", "is a folder"),
    Case("table_output_in_proc", ("table", "{d}/sweep", "-o", "/proc/x/t.csv"), "-o/--output", "give a writable"),
    Case("table_output_under_a_file", ("table", "{d}/sweep", "-o", "{d}/file.txt/t.csv"), "-o/--output",
         "is a file, not a folder"),
    Case("table_plots_is_a_file", ("table", "{d}/sweep", "--plots", "{d}/file.txt"), "--plots",
         "is a file, not a folder"),
    Case("table_plots_in_proc", ("table", "{d}/sweep", "--plots", "/proc/x"), "--plots", "give a writable"),
    Case("table_wandb_unknown", ("table", "{d}/sweep", "--wandb", "maybe"), "--wandb", HELP),
    # -- output paths of report
    Case("report_output_is_a_file", ("report", "{d}/sweep", "-o", "{d}/file.txt"), "-o/--output",
         "is a file, not a folder"),
    Case("report_output_dev_null", ("report", "{d}/sweep", "-o", "/dev/null"), "-o/--output",
         "is a file, not a folder"),
    Case("report_output_in_proc", ("report", "{d}/sweep", "-o", "/proc/x"), "-o/--output", "give a writable"),
    Case("report_output_name_too_long", ("report", "{d}/sweep", "-o", f"{{d}}/{'n' * 300}"), "-o/--output",
         "give a shorter path"),
    # -- figures dora
    Case("dora_confidence_nan", ("figures", "dora", "{d}/dsweep", "--confidence", "nan"), "--confidence", RANGE),
    Case("dora_confidence_minus_inf", ("figures", "dora", "{d}/dsweep", "--confidence=-inf"), "--confidence", RANGE),
    Case("dora_confidence_2", ("figures", "dora", "{d}/dsweep", "--confidence", "2"), "--confidence", RANGE),
    Case("dora_confidence_word", ("figures", "dora", "{d}/dsweep", "--confidence", "high"), "--confidence", HELP),
    Case("dora_out_is_a_file", ("figures", "dora", "{d}/dsweep", "-o", "{d}/file.txt"), "-o/--output",
         "is a file, not a folder"),
    Case("dora_out_in_proc", ("figures", "dora", "{d}/dsweep", "--out", "/proc/x"), "-o/--output", "give a writable"),
    Case("dora_axis_unknown", ("figures", "dora", "{d}/dsweep", "--axis", "diagonal"), "--axis", HELP),
    Case("dora_wandb_unknown", ("figures", "dora", "{d}/dsweep", "--wandb", "maybe"), "--wandb", HELP),
    Case("dora_wandb_mode_not_a_choice", ("figures", "dora", "{d}/dsweep", "--wandb", "offline"), "--wandb", HELP),
    # -- figures adalora
    Case("adalora_steps_words", ("figures", "adalora", "{d}/asweep", "--steps", "a,b"), "--steps", "whole numbers"),
    Case("adalora_steps_fraction", ("figures", "adalora", "{d}/asweep", "--steps", "1.5"), "--steps", "whole numbers"),
    Case("adalora_steps_nan", ("figures", "adalora", "{d}/asweep", "--steps", "nan"), "--steps", "whole numbers"),
    Case("adalora_steps_zero", ("figures", "adalora", "{d}/asweep", "--steps", "0,4"), "--steps", "count from 1"),
    Case("adalora_steps_negative", ("figures", "adalora", "{d}/asweep", "--steps=-4"), "--steps", "count from 1"),
    Case("adalora_steps_empty_item", ("figures", "adalora", "{d}/asweep", "--steps", "4,,8"), "--steps",
         "whole numbers"),
    Case("adalora_out_is_a_file", ("figures", "adalora", "{d}/asweep", "--output", "{d}/file.txt"), "-o/--output",
         "is a file, not a folder"),
    Case("adalora_out_in_proc", ("figures", "adalora", "{d}/asweep", "--out", "/proc/x"), "-o/--output",
         "give a writable"),
    Case("adalora_no_input", ("figures", "adalora"), "RUNS", "--from-peft-json"),
    Case("adalora_wandb_unknown", ("figures", "adalora", "{d}/asweep", "--wandb", "maybe"), "--wandb", HELP),
    # -- export-peft
    Case("export_output_is_a_file", ("export-peft", "{d}/sweep", "-o", "{d}/file.txt"), "-o/--output",
         "is a file, not a folder"),
    Case("export_output_dev_null", ("export-peft", "{d}/sweep", "-o", "/dev/null"), "-o/--output",
         "is a file, not a folder"),
    Case("export_output_in_proc", ("export-peft", "{d}/sweep", "-o", "/proc/x"), "-o/--output", "give a writable"),
    Case("export_output_name_too_long", ("export-peft", "{d}/sweep", "-o", f"{{d}}/{'n' * 300}/x"), "-o/--output",
         "give a shorter path"),
    # -- the command line itself
    Case("unknown_figure", ("figures", "lora", "{d}/dsweep"), "'lora'", HELP),
    Case("unknown_command", ("plot", "{d}/sweep"), "'plot'", HELP),
    Case("table_without_runs", ("table",), "runs", HELP),
    Case("unknown_flag", ("table", "{d}/sweep", "--bogus"), "--bogus", HELP),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("analysis_inputs")
    with pytest.MonkeyPatch.context() as mp:  # the synthetic runs plan a tiny model on SST-2
        mp.setenv("GLUE_DIR", str(GLUE))
        make_sweep(d, failed=False)
        make_dora_sweep(d / "dsweep", methods=("lora",), seeds=(0,))
        make_run(d / "asweep" / "0_adalora_s0", seed=0, final=FINAL_A)
    (d / "file.txt").write_text("a user's file\n")
    return d


def contents(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` and its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_catalogue_is_large_and_distinct() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES) and len({c.args for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_option(case: Case, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # a default output folder would go here
    before = contents(inputs)
    rc = main([a.replace("{d}", str(inputs)) for a in case.args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert case.names in lines[0] and case.fix in lines[0], lines[0]
    assert "Traceback" not in err and "usage:" not in err
    assert not list(tmp_path.iterdir())  # no output folder
    assert contents(inputs) == before
