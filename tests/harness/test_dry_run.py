"""``--dry-run``: the run or the sweep's jobs with their folders and actions (run / skip / resume), nothing
written; bad input exits 2 with one line as a real run does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.run import run
from tests.conftest import TINY, compose_cfg
from tests.harness.test_cli import in_process


def files_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_sweep_dry_run_lists_jobs_and_writes_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    run(compose_cfg([*TINY, "method=lora", "snapshot=none"]), sweep / "0_lora_b8_sst2_s0")  # done before
    before = files_under(tmp_path)
    r = in_process(capfd, "--dry-run", "-m", *TINY, "snapshot=none", "method=lora,dora", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    lora = next(ln for ln in lines if "lora-b8-sst2-s0" in ln and "dora" not in ln)
    dora = next(ln for ln in lines if "dora-b8-sst2-s0" in ln)
    assert "skip (done)" in lora and str(sweep / "0_lora_b8_sst2_s0") in lora
    assert " run " in dora and str(sweep / "1_dora_b8_sst2_s0") in dora
    assert "2 job(s): 1 skip, 1 run; nothing was written" in lines[-1]
    assert files_under(tmp_path) == before


def test_single_dry_run_writes_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    r = in_process(capfd, "--dry-run", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "lora-b8-sst2-s0" in r.stdout and str(tmp_path / "run") in r.stdout
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(("args", "expect"), [
    (["method.r=0"], "method.r: must be a positive integer"),
    (["--cfg", "job"], "--dry-run: cannot be combined with --cfg"),
    (["-m", "method=lora,lorax"], "method=lorax"),
    (["-m", "compare", "train.lr_scale=2"], "train.lr_scale: set by hydra.sweeper.select"),
])
def test_dry_run_bad_input_exits_2(args: list[str], expect: str, tmp_path: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    r = in_process(capfd, "--dry-run", *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}",
                   f"hydra.sweep.dir={tmp_path / 's'}")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and expect in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and files_under(tmp_path) == []


def test_actions_from_the_folder_record(tmp_path: Path) -> None:
    """describe() reads the folder's record as a real run would: another configuration → blocked, a failed
    attempt without a checkpoint → run again, nothing → run; the folder is only read."""
    import json

    from harness.config import config_hash
    from harness.dry_run import describe
    from harness.run import plan

    job = compose_cfg([*TINY, "method=lora", "snapshot=none"])
    h = config_hash(plan(job).cfg)
    assert describe(job, tmp_path / "new", name="x")["action"] == "run"
    for name, status, hash_, expect in (("other", "done", "0" * 16, "blocked: "), ("failed", "failed", h, "run again")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": status, "config_hash": hash_, "host": "x"}))
        before = files_under(tmp_path)
        row = describe(job, tmp_path / name, name="x")
        assert row["action"].startswith(expect) and row["folder"] == str(tmp_path / name)
        assert files_under(tmp_path) == before


def test_two_stage_dry_run_lists_stage_1_and_plans_stage_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           one_thread: None) -> None:
    """``-m compare --dry-run``: stage 1's jobs with their folders and actions, then stage 2's plan; a grid point
    whose stage-1 runs are done gets its choice and its stage-2 jobs now, where the real sweep then puts them;
    nothing is written."""
    import json

    from harness.__main__ import main
    from tests.harness.test_compare_preset import args

    # lora and full, lr_scale 1 and 4, seeds 0 and 1 (writes the task's CSV files); no grid extension: an edge
    # choice's extra stage-1 jobs would shift stage 2's job numbers, which no dry run can know before stage 1
    both = args(tmp_path, "hydra.sweeper.select.extend=0")
    sweep = tmp_path / "sweep"

    def dry(*extra: str) -> list[str]:
        before = files_under(tmp_path)
        assert main(["--dry-run", *both, *extra]) == 0
        assert files_under(tmp_path) == before
        return capsys.readouterr().out.splitlines()

    out = dry()
    assert out[0].startswith("stage 1: every grid point at train.lr_scale = 1.0, 4.0, seed 0; the value with the best "
                             "valid/<main metric> is chosen")
    stage1 = [ln for ln in out if ln.split(" ", 1)[0].isdigit()]
    assert len(stage1) == 4 and all(" run " in ln for ln in stage1)
    assert "lora-b8-custom-s0 train.lr_scale=4.0" in stage1[1] and str(sweep / "1_lora_b8_custom_s0") in stage1[1]
    assert "stage 2: the chosen train.lr_scale with seeds 0, 1: 2 job(s) per grid point, 4 for the 2 grid " \
           "point(s)" in out[6]
    assert "2 grid point(s): train.lr_scale is chosen when their stage-1 jobs have run" in out[7]
    assert out[-1] == "dry run: stage 1: 4 job(s): 4 run; stage 2: 4 job(s) after stage 1; nothing was written"

    # LoRA's stage 1 done (as a plain sweep of the same configurations): its choice is known now
    assert main([*both, "hydra.sweeper.select=null", "hydra.sweeper.params.method=lora", "train.lr_scale=1.0,4.0",
                 "seed=0"]) == 0
    capsys.readouterr()
    scores = {}
    for f in sweep.glob("*/run.json"):
        s = json.loads((f.parent / "summary.json").read_text())
        scores[s["lr_scale"]] = s["valid/accuracy"]
    chosen = 1.0 if scores[1.0] >= scores[4.0] else 4.0
    out = dry()
    assert sum(" skip (done) " in ln for ln in out if ln.split(" ", 1)[0].isdigit()) == 2 + 1  # stage 1 + seed 0
    assert f"  task=custom method=lora budget=8: train.lr_scale={chosen}, chosen from its finished stage-1 " \
           f"runs" in out
    assert any(ln.startswith("  the other 1 grid point(s): train.lr_scale is chosen when their stage-1 jobs have run")
               for ln in out)
    planned = {ln.split()[1]: ln for ln in out if ln.split(" ", 1)[0].isdigit() and int(ln.split()[0]) >= 4}
    assert set(planned) == {"lora-b8-custom-s0", "lora-b8-custom-s1"}
    assert " skip (done) " in planned["lora-b8-custom-s0"] and " run " in planned["lora-b8-custom-s1"]
    assert out[-1] == "dry run: stage 1: 4 job(s): 2 skip, 2 run; stage 2, known so far: 2 of 4 job(s): 1 skip, " \
                      "1 run; nothing was written"

    # the real sweep puts LoRA's stage-2 run where the dry run said
    assert main(both) == 0
    sel = json.loads((sweep / "selection.json").read_text())
    lora = next(p for p in sel["points"] if "method=lora" in p["point"])
    assert lora["chosen"] == chosen
    new = next(st["run_dir"] for st in lora["stage2"] if st["overrides"][-1] == "seed=1")
    assert new == planned["lora-b8-custom-s1"].split()[-1]


def test_describe_gives_steps_examples_and_an_estimate(tmp_path: Path) -> None:
    """steps = the run's optimizer steps, examples = steps × batch × grad_accum, the estimated seconds from the
    measured step time of that model/task/method/batch on this device kind (× grad_accum), labelled with its
    source; a model without a measurement gets none."""
    from harness.dry_run import describe
    from harness.estimates import lookup

    job = compose_cfg(["method=dora", "train.device=cpu", "train.max_steps=300", "train.grad_accum=2",
                       "tracking=none", "snapshot=none"])
    row = describe(job, tmp_path / "new", name="x")
    measured = lookup("minilm", "sst2", "dora", 32, "cpu")
    assert measured is not None
    assert row["steps"] == "300" and row["examples"] == str(300 * 32 * 2)
    assert float(row["seconds"]) == pytest.approx(300 * 2 * measured.seconds)
    assert row["estimate"] == measured.label()
    tiny = describe(compose_cfg([*TINY, "train.device=cpu"]), tmp_path / "tiny", name="t")
    assert tiny["steps"] == "6" and tiny["examples"] == str(6 * 8) and tiny["seconds"] == "" and tiny["estimate"] == ""


def test_sweep_dry_run_prints_estimates_per_job_and_in_total(tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """The default sweep on the CPU: each job's steps, examples and ≈ time, a total, every estimate labelled with
    the measurement it comes from; a job already done costs nothing."""
    from harness.estimates import duration, lookup

    sweep = tmp_path / "sweep"
    r = in_process(capfd, "--dry-run", "-m", "sweep", "train.device=cpu", "method=full,lora", "tracking=none",
                   f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].split()[:6] == ["#", "name", "action", "steps", "examples", "time"]
    full, lora = (lookup("minilm", "sst2", m, 32, "cpu") for m in ("full", "lora"))
    assert full is not None and lora is not None
    jobs = [ln for ln in lines if re.match(r"^\d+ ", ln)]
    assert len(jobs) == 3
    assert jobs[0].split()[3:6] == ["300", "9,600", "≈"] and f"≈ {duration(300 * full.seconds)} [1]" in jobs[0]
    assert f"≈ {duration(300 * lora.seconds)} [2]" in jobs[1]
    total = 300 * full.seconds + 2 * 300 * lora.seconds
    assert any(ln.startswith(f"estimated time: ≈ {duration(total)} for 3 job(s) run one after another")
               for ln in lines), lines
    assert f"  [1] {full.label()}" in lines and f"  [2] {lora.label()}" in lines
