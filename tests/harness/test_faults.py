"""Fault injection (issue "Reliability 3"): links, hard links, loops and foreign files wherever the harness deletes;
force interrupted or failing half-way; two jobs for one folder; damaged records; settings that do not apply;
sizes and folders checked before heavy work; SIGKILL at several stages; a full disk; a held lock; a W&B outage.

Each test asserts the promise of docs/reliability.md it holds: nothing outside the run folder changes, no
record says ``done`` for a run that is not, a bad input is one line and exit 2 (the dry run's too), a damaged
record costs that run only. Tiny models; ``-m faults`` runs them alone."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import checkpoint as ck
from harness.__main__ import main
from harness.record import (MANIFEST_FILE, PID_MAX, BadRecord, read_run, read_summary, temp_owner,
                            write_json_atomic)
from harness.run import run
from harness.run_folder import RunLock, remove_entry
from tests.conftest import GLUE, ROOT, TINY, compose_cfg

pytestmark = pytest.mark.faults

RUN = [*TINY, "train.max_steps=2", "train.eval_every=2"]
DEAD_PID = PID_MAX - 7  # no process has it (pids stay far below 2**31 on Linux)


# ---------------------------------------------------------------------------------------------------------
# helpers


def snapshot_tree(root: Path) -> dict[str, Any]:
    """Everything under ``root`` as {relative path: (kind, content hash or link target)}, links not followed."""
    out: dict[str, Any] = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(here) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the run folder holding files the harness never wrote."""
    d = tmp_path / "outside"
    (d / "deep").mkdir(parents=True)
    (d / "precious.txt").write_text("not the harness's")
    (d / "deep" / "step_00000002").mkdir()
    (d / "deep" / "step_00000002" / "state.json").write_text("{}")
    (d / "metrics_of_mine.jsonl").write_text('{"step": 1}\n')
    return d


def done_run(run_dir: Path, *more: str) -> dict[str, Any]:
    return run(compose_cfg([*RUN, *more]), run_dir)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def crash(run_dir: Path) -> None:
    """Make the folder read as a killed attempt's: 'running' naming a dead process, the manifest's contents not
    listed (what a SIGKILL leaves)."""
    rec = json.loads((run_dir / "run.json").read_text())
    rec.update(status="running", pid=DEAD_PID, proc_start=None, host=socket.gethostname())
    (run_dir / "run.json").write_text(json.dumps(rec))
    manifest = json.loads((run_dir / MANIFEST_FILE).read_text())
    manifest["contents_complete"] = False
    (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------------------------------------
# 1. deletions: only what the harness wrote, inside the run folder, never through a link


def plant_link(run_dir: Path, rel: str, target: Path) -> None:
    p = run_dir / rel
    if p.is_dir() and not p.is_symlink():
        remove_entry(run_dir, rel)
    elif os.path.lexists(p):
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(target)


@pytest.mark.parametrize("entry", ["checkpoints", "snapshots", "adapter", "metrics.jsonl", "summary.json"])
@pytest.mark.parametrize("mode", ["resume", "force"])
def test_a_link_at_a_harness_name_is_refused_and_nothing_outside_changes(
        entry: str, mode: str, tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's first case (resume pruning a linked checkpoints/) and its neighbours: exit 2 naming the link."""
    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=every", "snapshot.every=1", "train.checkpoint_every=1")
    target = outside / "deep" if entry in ("checkpoints", "snapshots", "adapter") else outside / "precious.txt"
    plant_link(run_dir, entry, target)
    if mode == "resume":
        crash(run_dir)
    before, inside = snapshot_tree(outside), snapshot_tree(run_dir)
    capsys.readouterr()
    args = [*RUN, "snapshot=every", "snapshot.every=1", "train.checkpoint_every=1", f"hydra.run.dir={run_dir}"]
    assert main([*args, *(["train.force=true"] if mode == "force" else [])]) == 2
    line = one_error_line(capsys)
    assert f"{entry} is a symbolic link" in line and "replace the link" in line
    assert snapshot_tree(outside) == before
    assert {k: v for k, v in snapshot_tree(run_dir).items() if not k.startswith((".hydra", "app.log"))} == \
           {k: v for k, v in inside.items() if not k.startswith((".hydra", "app.log"))}


@pytest.mark.parametrize("plant", ["link_to_folder", "link_to_file", "loop_to_parent", "loop_to_itself",
                                   "hard_link"])
def test_force_after_a_kill_removes_links_as_links(plant: str, tmp_path: Path, outside: Path) -> None:
    """After a kill the contents of the harness's folders are not known and are taken as its own: cleaning them
    removes links inside as links, a hard link as one name; every file outside is unchanged."""
    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=every", "snapshot.every=1")
    snaps = run_dir / "snapshots"
    if plant == "link_to_folder":
        (snaps / "x").symlink_to(outside)
    elif plant == "link_to_file":
        (snaps / "x").symlink_to(outside / "precious.txt")
    elif plant == "loop_to_parent":
        (snaps / "x").symlink_to("..")
    elif plant == "loop_to_itself":
        (snaps / "x").symlink_to("x")
    else:
        os.link(outside / "precious.txt", snaps / "x")
    crash(run_dir)
    (run_dir / "notes.txt").write_text("mine")
    before = snapshot_tree(outside)
    done_run(run_dir, "snapshot=every", "snapshot.every=1", "train.force=true")
    assert snapshot_tree(outside) == before
    assert (outside / "precious.txt").read_text() == "not the harness's"
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert not os.path.lexists(snaps / "x") and read_run(run_dir)["status"] == "done"


def test_a_hard_linked_record_file_is_replaced_not_written_through(tmp_path: Path, outside: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.jsonl hard-linked to a file elsewhere: a resumed attempt rewrites it atomically (a new file),
    the other name keeps its bytes."""
    import harness.run as run_mod

    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(run_mod.ckpt_io, "remove", lambda run_dir: None)  # the checkpoint stays, as after a kill
        done_run(run_dir, "train.max_steps=4", "train.checkpoint_every=2")
    mine = outside / "metrics_of_mine.jsonl"
    (run_dir / "metrics.jsonl").unlink()
    os.link(mine, run_dir / "metrics.jsonl")
    crash(run_dir)
    before = snapshot_tree(outside)
    done_run(run_dir, "train.max_steps=4", "train.checkpoint_every=2")
    assert read_run(run_dir)["resumed_from"] == [2]
    assert snapshot_tree(outside) == before


def test_checkpoint_pruning_never_follows_links(tmp_path: Path, outside: Path) -> None:
    run_dir = tmp_path / "run"
    ck.save(run_dir, 1, {"w": 1})
    (run_dir / ck.DIR / "step_00000000").symlink_to(outside / "deep")  # an "older checkpoint" that is a link
    before = snapshot_tree(outside)
    ck.save(run_dir, 2, {"w": 2})
    assert sorted(p.name for p in (run_dir / ck.DIR).iterdir()) == ["step_00000002"]
    assert snapshot_tree(outside) == before
    ck.remove(run_dir)
    (run_dir / ck.DIR).symlink_to(outside / "deep")
    with pytest.raises(OSError, match="a link, not a folder of the run"):
        ck.save(run_dir, 3, {"w": 3})
    ck.remove(run_dir)  # removes the link only
    assert not os.path.lexists(run_dir / ck.DIR) and snapshot_tree(outside) == before


def test_remove_entry_never_leaves_the_run_folder(tmp_path: Path, outside: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "a" / "b").mkdir(parents=True)
    (run_dir / "a" / "b" / "f").write_text("x")
    (run_dir / "a" / "up").symlink_to(tmp_path)  # a link to the folder above the run
    (run_dir / "a" / "b" / "loop").symlink_to("../..")
    (run_dir / "via").symlink_to(outside)
    before = snapshot_tree(outside)
    with pytest.raises(OSError, match="on the way is a link"):
        remove_entry(run_dir, "via/precious.txt")
    with pytest.raises(ValueError):
        remove_entry(run_dir, "../outside/precious.txt")
    assert remove_entry(run_dir, "a") and remove_entry(run_dir, "via")
    assert not remove_entry(run_dir, "a")
    assert snapshot_tree(outside) == before and os.listdir(run_dir) == []


def test_a_mount_point_inside_is_not_removed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "disk").mkdir(parents=True)
    mnt = run_dir / "checkpoints" / "disk"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        (mnt / "kept.txt").write_text("on another file system")
        with pytest.raises(OSError, match="mount point"):
            remove_entry(run_dir, "checkpoints")
        assert (mnt / "kept.txt").read_text() == "on another file system"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_temporaries_of_a_killed_writer_are_reclaimed_and_nothing_else(tmp_path: Path, outside: Path) -> None:
    run_dir = tmp_path / "run"
    store = tmp_path / "w0"
    args = ("snapshot=every", "snapshot.every=1", f"snapshot.w0_store={store}")
    done_run(run_dir, *args)
    stale = [f".adapter.tmp{DEAD_PID}", f".run.json.tmp{DEAD_PID}", f".tmp_step_00000004.{DEAD_PID}"]
    (run_dir / stale[0]).mkdir()
    (run_dir / stale[0] / "adapter_model.safetensors").write_bytes(b"half")
    (run_dir / stale[1]).write_text("{")
    (run_dir / "snapshots" / f".w0.safetensors.link{DEAD_PID}").write_text("x")
    (run_dir / f".adapter.old{DEAD_PID}").symlink_to(outside)  # a temp name that is a link: removed as a link
    live = run_dir / f".summary.json.tmp{os.getppid()}"  # a live process's name: kept
    live.write_text("{}")
    (run_dir / ".notes.tmp").write_text("mine")  # not our pattern: kept
    digest = next(store.glob("*.safetensors")).name
    w0_stale = store / f".{digest}.abc123.{socket.gethostname()}.tmp{DEAD_PID}"
    w0_other_host = store / f".{digest}.abc123.another-host.tmp{DEAD_PID}"
    for f in (w0_stale, w0_other_host):
        f.write_bytes(b"half a W0")
    before = snapshot_tree(outside)
    done_run(run_dir, *args, "train.force=true")
    names = {p.name for p in run_dir.rglob("*")}
    assert not names & {*stale, f".w0.safetensors.link{DEAD_PID}", f".adapter.old{DEAD_PID}"}
    assert live.exists() and (run_dir / ".notes.tmp").exists()
    assert not w0_stale.exists() and w0_other_host.exists()
    assert snapshot_tree(outside) == before


def test_temp_names_are_recognised() -> None:
    assert temp_owner(".run.json.tmp123") == 123 and temp_owner(".adapter.old9") == 9
    assert temp_owner(".tmp_step_00000004.77") == 77 and temp_owner(".w0.safetensors.link5") == 5
    assert temp_owner(".notes.tmp") is None and temp_owner("run.json") is None and temp_owner(".lock.12.ab") is None


# ---------------------------------------------------------------------------------------------------------
# 2. force is atomic for the reader


def test_force_says_replacing_before_it_deletes_and_failed_when_it_cannot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.run as run_mod
    from analysis.load import load_runs

    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=every", "snapshot.every=1")
    seen: list[str] = []
    real = run_mod.remove_entry

    def undeletable(root: Path, rel: Any) -> bool:
        seen.append(json.loads((root / "run.json").read_text())["status"])
        if str(rel) == "snapshots":
            raise PermissionError(13, "Operation not permitted", str(root / rel))
        return real(root, rel)

    monkeypatch.setattr(run_mod, "remove_entry", undeletable)
    with pytest.raises(OSError, match="could not remove snapshots"):
        done_run(run_dir, "snapshot=every", "snapshot.every=1", "train.force=true")
    assert seen and set(seen) == {"replacing"}  # the record said so before the first deletion
    rec = read_run(run_dir)
    assert rec["status"] == "failed" and "could not remove snapshots" in rec["error"]
    runs = load_runs([tmp_path])
    assert runs.table.empty and "status failed" in runs.skipped[0][1]
    monkeypatch.setattr(run_mod, "remove_entry", real)
    done_run(run_dir, "snapshot=every", "snapshot.every=1")  # the same command again finishes it
    assert read_run(run_dir)["status"] == "done"


def test_an_interrupted_replace_reads_as_not_done(tmp_path: Path) -> None:
    from analysis.load import load_runs
    from analysis.runs import run_rows

    run_dir = tmp_path / "run"
    done_run(run_dir)
    rec = json.loads((run_dir / "run.json").read_text())
    rec.update(status="replacing", pid=DEAD_PID, host=socket.gethostname())
    (run_dir / "run.json").write_text(json.dumps(rec))
    assert read_run(run_dir)["status"] == "crashed"
    assert load_runs([run_dir]).table.empty
    assert list(run_rows([str(run_dir)])["status"]) == ["crashed"]
    summary = done_run(run_dir)  # not skipped as done: run again
    assert not summary.get("skipped") and read_run(run_dir)["status"] == "done"


# ---------------------------------------------------------------------------------------------------------
# 3. one folder, one job


@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry_run"])
def test_two_jobs_in_one_folder_is_exit_2_naming_both(dry: bool, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, "snapshot=none", "seed=0,1,2", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=same"]
    capsys.readouterr()
    assert main([*args, *(["--dry-run"] if dry else [])]) == 2
    line = one_error_line(capsys)
    assert f"hydra.sweep.subdir: the jobs 'seed=0' and 'seed=1' both go to {sweep / 'same'}" in line, line
    assert "own folder" in line
    assert not list(sweep.rglob("run.json"))


# ---------------------------------------------------------------------------------------------------------
# 4. readers that survive damaged records


def damage(d: Path, how: str) -> tuple[str, str]:
    """Damage the run folder ``d`` one way; returns (file, key) the warning must name."""
    rec = json.loads((d / "run.json").read_text())
    summary = json.loads((d / "summary.json").read_text())
    if how == "pid_negative":
        rec.update(pid=-1, status="running", host=socket.gethostname())
        key = ("run.json", "pid")
    elif how == "pid_huge":
        rec.update(pid=10**30, status="running", host=socket.gethostname())
        key = ("run.json", "pid")
    elif how == "config_string":
        rec["config"] = "lora, sst2"
        key = ("run.json", "config")
    elif how == "metric_abc":
        summary["eval/accuracy"] = "abc"
        key = ("summary.json", "eval/accuracy")
    elif how == "huge_int":
        (d / "run.json").write_text(json.dumps(rec)[:-1] + ', "seed2": ' + "9" * 5_000_000 + "}")
        return "run.json", "(file)"
    elif how == "huge_float":
        (d / "summary.json").write_text(json.dumps(summary)[:-1] + ', "train_seconds": ' + "9" * 5_000_000 + ".5}")
        return "summary.json", "train_seconds"
    elif how == "truncated":
        (d / "run.json").write_text(json.dumps(rec)[:40])
        return "run.json", "(file)"
    elif how == "top_level_list":
        (d / "summary.json").write_text(json.dumps([summary]))
        return "summary.json", "(top level)"
    else:
        raise AssertionError(how)
    (d / "run.json").write_text(json.dumps(rec))
    (d / "summary.json").write_text(json.dumps(summary))
    return key


DAMAGE = ["pid_negative", "pid_huge", "config_string", "metric_abc", "huge_int", "huge_float", "truncated",
          "top_level_list"]


@pytest.fixture
def damaged_sweep(tmp_path: Path) -> Callable[[str], tuple[Path, Path, tuple[str, str]]]:
    from tests.analysis.test_compare import write_run

    def make(how: str) -> tuple[Path, Path, tuple[str, str]]:
        sweep = tmp_path / "sweep"
        for seed in (0, 1, 2):
            write_run(sweep, f"good{seed}", seed=seed, value=0.8 + 0.01 * seed)
        bad = write_run(sweep, "bad", seed=3)
        return sweep, bad, damage(bad, how)
    return make


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_record_is_one_warning_and_the_rest_is_analysed(
        how: str, damaged_sweep: Any, caplog: pytest.LogCaptureFixture) -> None:
    from analysis.load import load_runs

    sweep, bad, (name, key) = damaged_sweep(how)
    with pytest.raises(BadRecord) as e:
        read_run(bad) if name == "run.json" else read_summary(bad)
    assert e.value.key == key and e.value.path == bad / name and len(str(e.value)) < 400
    caplog.set_level(logging.WARNING)
    runs = load_runs([sweep])
    assert sorted(Path(p).name for p in runs.table["run_dir"]) == ["good0", "good1", "good2"]
    warned = [r.getMessage() for r in caplog.records if "bad" in r.getMessage()]
    assert len(warned) == 1 and f"{bad / name}: {key}:" in warned[0], warned


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("command", ["table", "report", "export-peft", "runs"])
def test_analysis_commands_survive_a_damaged_record(how: str, command: str, damaged_sweep: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.__main__ import main as analysis_main

    if command == "report" and how not in ("config_string", "metric_abc"):
        pytest.skip("the report's loading is load_runs' (covered by the table); two cases keep it fast")
    sweep, bad, (name, key) = damaged_sweep(how)
    out = tmp_path / "out"
    args = {"table": ["table", str(sweep), "-o", str(out / "t.md"), "--wandb", "off"],
            "report": ["report", str(sweep), "-o", str(out), "--wandb", "off"],
            "export-peft": ["export-peft", str(sweep), "-o", str(out)],
            "runs": ["runs", str(sweep)]}[command]
    capsys.readouterr()
    assert analysis_main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if command == "export-peft":
        files = sorted(out.rglob("*.json"))
        assert len(files) == 3
        for f in files:
            json.loads(f.read_text(), parse_constant=lambda c: pytest.fail(f"{f}: {c} is not JSON"))
    if command == "runs":  # every folder is listed: a damaged run.json as unreadable, a damaged summary without metric
        assert ("3 done, 1 unreadable" if name == "run.json" else "4 run(s): 4 done") in captured.out
        assert f"{bad / name}: {key}:" in captured.err


def test_exports_write_nan_as_null(tmp_path: Path) -> None:
    from analysis.__main__ import main as analysis_main
    from tests.analysis.test_compare import write_run

    d = write_run(tmp_path / "sweep", "nan", seed=0)
    summary = json.loads((d / "summary.json").read_text())
    summary.update({"eval/accuracy": float("nan"), "main_metric_value": float("nan"), "eval/loss": float("inf")})
    (d / "summary.json").write_text(json.dumps(summary))  # Python writes NaN / Infinity (not JSON)
    assert analysis_main(["export-peft", str(tmp_path / "sweep"), "-o", str(tmp_path / "out")]) == 0
    f = next((tmp_path / "out").rglob("*.json"))
    data = json.loads(f.read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
    final = data["train_info"]["metrics"][-1]
    assert final["test accuracy"] is None and final["test loss"] is None


@pytest.mark.parametrize("how", ["pid_negative", "pid_huge", "config_string", "truncated"])
@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry_run"])
def test_the_harness_refuses_a_damaged_record_with_one_line_and_force_starts_over(
        how: str, dry: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=none")
    name, key = damage(run_dir, how)
    capsys.readouterr()
    args = [*RUN, "snapshot=none", f"hydra.run.dir={run_dir}"]
    assert main([*args, *(["--dry-run"] if dry else [])]) == 2
    line = one_error_line(capsys)
    assert f"{run_dir / name}: {key}:" in line and "pass train.force=true" in line and "kill" not in line
    if not dry:
        assert main([*args, "train.force=true"]) == 0
        assert read_run(run_dir)["status"] == "done"


@pytest.mark.parametrize("pid", [-1, 0, 10**30, "12"])
def test_a_damaged_lock_file_is_named_not_trusted(pid: Any, tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": 5, "since": None}))
    lock = RunLock(tmp_path)
    lock.acquire()  # nobody holds the flock: taken over, whatever the file says
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); os.write(fd, sys.argv[2].encode()); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / ".lock"), json.dumps({"pid": pid, "host": 5})],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert RunLock(tmp_path).busy() == f"{tmp_path}: running in pid ? on ? since ?; wait for it, or pass " \
                                           f"hydra.run.dir=<another folder>"
    finally:
        holder.kill()
        holder.wait()


def test_eval_refuses_a_damaged_record_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.eval import main as eval_main

    run_dir = tmp_path / "run"
    done_run(run_dir, "snapshot=none")
    damage(run_dir, "pid_huge")
    capsys.readouterr()
    assert eval_main([str(run_dir)]) == 2
    assert "run.json: pid: must be an integer" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------------------
# 5. records say what happened


def test_a_problem_that_does_not_apply_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for dry in (False, True):
        capsys.readouterr()
        rc = main([*RUN, "task.problem=regression", f"hydra.run.dir={tmp_path / 'r'}", *(["--dry-run"] * dry)])
        assert rc == 2
        line = one_error_line(capsys)
        assert line.startswith("error: task.problem: sst2 is a classification task") and "drop task.problem" in line
    assert not (tmp_path / "r" / "run.json").exists()


def test_the_record_holds_the_problem_that_trained(tmp_path: Path) -> None:
    run(compose_cfg([*RUN, "task=stsb", "snapshot=none"]), tmp_path / "stsb")
    assert read_run(tmp_path / "stsb")["config"]["task"]["problem"] == "regression"
    assert json.loads((tmp_path / "stsb" / "config.json").read_text())["task"]["problem"] == "regression"


def test_config_hash_of_a_default_problem_is_unchanged() -> None:
    """Records from before task.problem could be null hashed 'classification' for every GLUE task."""
    from harness.config import config_hash, to_typed

    typed = to_typed(compose_cfg([*RUN, "task=stsb"]))
    assert typed.task.problem is None
    before = config_hash(typed)
    typed.task.problem = "regression"  # as plan() resolves it
    assert config_hash(typed) == before
    typed.task.problem = "classification"  # what the old records hold
    assert config_hash(typed) == before


@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry_run"])
def test_a_typo_in_per_method_lr_scale_names_the_closest_method(dry: bool, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    args = [*RUN, "+train.lr_scale={lroa: 2.0, default: 1.0}", f"hydra.run.dir={tmp_path / 'r'}"]
    assert main([*args, *(["--dry-run"] * dry)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: train.lr_scale.lroa: no method of that name; did you mean lora?"), line


def test_the_record_holds_the_resolved_lr_scale(tmp_path: Path) -> None:
    run(compose_cfg([*RUN, "snapshot=none", "+train.lr_scale={lora: 2.0, default: 1.0}"]), tmp_path)
    rec = read_run(tmp_path)
    assert rec["config"]["train"]["lr_scale"] == 2.0 and rec["lr"] == pytest.approx(2.0 * rec["config"]["method"]["lr"])


# ---------------------------------------------------------------------------------------------------------
# 6. checked before heavy work: the dry run says the same


def _file(tmp_path: Path) -> str:
    (tmp_path / "a_file").write_text("x")
    return str(tmp_path / "a_file")


BEFORE_WORK: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "w0_store_a_file": (lambda t: ["snapshot=every", f"snapshot.w0_store={_file(t)}/w0"],
                        "snapshot.w0_store: "),
    "rank_above_the_matrix": (lambda t: ["method.r=100000"],
                              "method.r: 100000 is above the rank of the adapted matrix"),
    "adalora_rank_above": (lambda t: ["method=adalora", "method.init_r=48", "method.target_r=40",
                                      "train.max_steps=40"],
                           "method.init_r: 48 is above the rank"),
    "padded_length": (lambda t: ["model.max_length=256", "train.pad_to_multiple=100"],
                      "train.pad_to_multiple: batches of model.max_length=256 are padded to 300, over the 256"),
}


@pytest.mark.parametrize("case", list(BEFORE_WORK))
def test_checked_before_heavy_work_and_the_dry_run_agrees(case: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    extra, expect = BEFORE_WORK[case]
    args = [*RUN, *extra(tmp_path), f"hydra.run.dir={tmp_path / 'run'}"]
    lines = []
    for dry in (True, False):
        capsys.readouterr()
        assert main([*args, *(["--dry-run"] * dry)]) == 2
        lines.append(one_error_line(capsys))
    assert lines[0] == lines[1] and expect in lines[0], lines
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_tiny_validation_split_cannot_select(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-m", *RUN, "snapshot=none", "task.validation_fraction=0.1", "task.max_eval_samples=8",
            "+hydra.sweeper.select={key: train.lr_scale, values: [1.0, 2.0], seeds: [0]}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    lines = []
    for dry in (True, False):
        capsys.readouterr()
        assert main([*args, *(["--dry-run"] * dry)]) == 2
        lines.append(one_error_line(capsys))
    assert "the validation split has 8 example(s); choosing a value on it needs at least 32" in lines[0]
    assert lines[0].split(" [sweep job")[0] == lines[1].split(" [sweep job")[0]


def test_a_busy_folder_is_exit_2_for_the_dry_run_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from harness.run_folder import RunLock; RunLock(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lines = []
        for dry in (True, False):
            capsys.readouterr()
            assert main([*RUN, f"hydra.run.dir={run_dir}", *(["--dry-run"] * dry)]) == 2
            lines.append(one_error_line(capsys))
        assert lines[0] == lines[1] and f"running in pid {holder.pid}" in lines[0]
    finally:
        holder.kill()
        holder.wait()


def test_wandb_outage_is_a_warning_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    import wandb

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("api.wandb.ai unreachable (simulated)")

    monkeypatch.setattr(wandb, "init", down)
    caplog.set_level(logging.WARNING)
    run(compose_cfg([*RUN, "snapshot=none", "tracking=offline"]), tmp_path)
    rec = read_run(tmp_path)
    assert rec["status"] == "done"
    assert rec["wandb"]["status"] == "failed" and "api.wandb.ai unreachable" in rec["wandb"]["error"]
    assert any("wandb failed to start" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "metrics.jsonl").is_file()


# ---------------------------------------------------------------------------------------------------------
# 7. SIGKILL at several stages, a full disk


KILL_AT = {
    # (module, attribute, which call kills): the process dies inside that call
    "after_the_record": ("harness.run", "JsonlLogger", 1),
    "saving_a_checkpoint": ("harness.checkpoint", "_fsync_dir", 1),
    "saving_the_adapter": ("harness.run", "_save_atomic", 1),
    "publishing_w0": ("harness.w0store", "reclaim", 1),
    "replacing_on_force": ("harness.run", "remove_entry", 2),
}
KILLER = """
import os, signal, sys, importlib
mod, attr, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = importlib.import_module(mod)
real, calls = getattr(m, attr), []
def killer(*a, **k):
    calls.append(1)
    if len(calls) == nth:
        if attr == "_save_atomic":  # half a save folder first
            os.makedirs(os.path.join(os.path.dirname(a[2]), f".{os.path.basename(a[2])}.tmp{os.getpid()}"))
        if attr == "reclaim":  # half a W0 file first
            open(os.path.join(a[0], f".{'0' * 64}.safetensors.x.{__import__('socket').gethostname()}.tmp{os.getpid()}"), "w").write("half")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
setattr(m, attr, killer)
from harness.__main__ import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.slow  # five killed and re-run trainings in subprocesses (~50 s): -m slow or -m faults
@pytest.mark.parametrize("stage", list(KILL_AT))
def test_sigkill_at_a_stage_leaves_no_false_record_and_the_rerun_finishes(stage: str, tmp_path: Path,
                                                                          outside: Path) -> None:
    from analysis.load import load_runs

    run_dir, store = tmp_path / "run", tmp_path / "w0"
    args = [*RUN, "train.max_steps=4", "train.checkpoint_every=1", "snapshot=every", "snapshot.every=2",
            f"snapshot.w0_store={store}", f"hydra.run.dir={run_dir}"]
    if stage == "replacing_on_force":
        assert main(args) == 0
        args.append("train.force=true")
    env = {**os.environ, "GLUE_DIR": str(GLUE), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = snapshot_tree(outside)
    proc = subprocess.run([sys.executable, "-c", KILLER, *map(str, KILL_AT[stage]), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if (run_dir / "run.json").exists():
        assert read_run(run_dir)["status"] == "crashed"  # never done, never a live-looking record
    assert load_runs([tmp_path]).table.empty if (run_dir / "run.json").exists() else True
    assert main(args) == 0  # the same command finishes it
    assert read_run(run_dir)["status"] == "done"
    leftovers = [p for p in [*run_dir.rglob("*"), *store.rglob("*")] if temp_owner(p.name) is not None]
    assert leftovers == []
    assert snapshot_tree(outside) == before


@pytest.mark.slow
def test_a_full_disk_fails_with_a_true_record_and_the_rerun_finishes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        filler = mnt / "filler"
        with open(filler, "wb") as f:  # leave ~120 KB: the record fits, the snapshots do not
            f.write(b"\0" * (1024 * 1024 - 120 * 1024))
        run_dir = mnt / "run"
        args = [*RUN, "train.max_steps=20", "snapshot=every", "snapshot.every=1", "snapshot.w0_store=run",
                "snapshot.log_metrics=false", f"hydra.run.dir={run_dir}"]
        assert main(args) == 1
        rec = read_run(run_dir)
        assert rec["status"] in ("failed", "crashed") and rec["status"] != "done"
        filler.unlink()
        assert main(args) == 0
        assert read_run(run_dir)["status"] == "done"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_writes_are_atomic_for_readers(tmp_path: Path) -> None:
    """A record written through a link replaces the link (never writes through it)."""
    target = tmp_path / "elsewhere.json"
    target.write_text('{"mine": true}')
    (tmp_path / "run.json").symlink_to(target)
    write_json_atomic(tmp_path / "run.json", {"status": "done"})
    assert target.read_text() == '{"mine": true}' and not (tmp_path / "run.json").is_symlink()
