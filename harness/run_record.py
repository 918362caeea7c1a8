"""The run folder's record: ``run.json`` (status, environment, config hash) written atomically.

Status: ``running`` → ``done`` | ``failed`` (with the error). A ``running`` record whose process is gone
reads as ``crashed`` (:func:`read_status`). A re-run of a crashed or failed run is a new *attempt* in the
same folder: ``attempt`` counts them and ``resumed_from`` lists the checkpoint step each one continued
from (None: started over); ``checkpoint`` names the latest checkpoint's step.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import harness
from harness.redact import redact, redact_obj

log = logging.getLogger(__name__)

#: A sweep folder's record of a two-stage selection (written by harness.sweeper, read by analysis and summaries).
SELECTION_FILE = "selection.json"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file + fsync + rename, so a reader never sees half a file. A failed write
    (a full disk) leaves no temporary behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text whose secret environment values are masked (harness.redact)."""
    write_bytes_atomic(path, redact(text).encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file + rename, so a reader never sees half a file."""
    write_text_atomic(path, json.dumps(redact_obj(obj), indent=2, default=str))


def write_report(path: Optional[Path], report: Any) -> None:
    """A benchmark's JSON report (atomically, its folder created); nothing when ``path`` is None."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(path), report)
    log.info("wrote %s", path)


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the harness source tree (None outside a git checkout)."""
    src = Path(harness.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware of this run."""
    import peft
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "harness": harness.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # set per worker by the packed launcher
        env["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


class RunRecord:
    """``run.json`` of one run folder: status running → done | failed (with the error)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "run.json"
        self.data: dict[str, Any] = {}

    def start(self, **fields: Any) -> None:
        """A new run: status running, this process and host, attempt 1."""
        self.data = {"status": "running", "started": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
                     "proc_start": _proc_start(os.getpid()), "attempt": 1, "resumed_from": [], **fields}
        self.data.setdefault("git", git_info())
        write_json_atomic(self.path, self.data)

    def restart(self, previous: dict[str, Any], *, resumed_from: int | None, **fields: Any) -> None:
        """Another attempt of the same run in this folder (after a kill or a failure), from a checkpoint's
        step or from scratch (``resumed_from=None``); the earlier attempt's end and error are kept."""
        prev = {k: previous.get(k) for k in ("status", "started", "ended", "error", "host", "pid")}
        history = list(previous.get("attempts", [])) + [prev]
        self.start(**fields)
        self.data.update(started=previous.get("started", self.data["started"]), attempt=len(history) + 1,
                         attempts=history, resumed_from=list(previous.get("resumed_from", [])) + [resumed_from],
                         restarted=time.time())
        self.data.pop("checkpoint", None)
        if resumed_from is not None:
            self.data["checkpoint"] = {"step": resumed_from}
        write_json_atomic(self.path, self.data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        try:
            write_json_atomic(self.path, self.data)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.path.is_file():
                raise
            _write_in_place(self.path, json.dumps(redact_obj(self.data), indent=2, default=str))
            log.warning("%s: disk full; run.json rewritten in place (no room for a temporary copy)", self.path)

    def done(self) -> None:
        self.update(status="done", ended=time.time(), error=None)

    def failed(self, error: str) -> None:
        self.update(status="failed", ended=time.time(), error=error)

    def checkpointed(self, step: int) -> None:
        """The latest checkpoint is the one after ``step``."""
        self.update(checkpoint={"step": step, "time": time.time()})


def _write_in_place(path: Path, text: str) -> None:
    """Overwrite ``path`` within its own blocks (a full disk has none for a new file): not atomic, so only the
    fallback of :meth:`RunRecord.update`."""
    data = redact(text).encode("utf-8")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run.json of a run folder; a ``running`` run whose process is gone on this host is ``crashed``."""
    path = run_dir / "run.json"
    if not path.is_file():
        return {"status": "missing"}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    if data.get("status") == "running" and data.get("host", socket.gethostname()) == socket.gethostname():
        pid = data.get("pid")
        if pid and not _alive(int(pid), data.get("proc_start")):
            data["status"] = "crashed"
            data["error"] = "the process ended without recording an end (killed or crashed)"
    return data


def recorded_budget(record: dict[str, Any]) -> Optional[int]:
    """A run's budget (the LoRA rank it is matched with; None: a method without ranks) from its run.json:
    the ``budget`` written there since it was recorded; for older records, migrated as it was read before —
    the method's ``target_r``, else its ``r``, from the recorded config."""
    if "budget" in record:
        return record["budget"]
    method = (record.get("config") or {}).get("method") or {}
    for key in ("target_r", "r"):
        if method.get(key) is not None:
            return int(method[key])
    return None


def _proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks after boot, from /proc), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: str | None = None) -> bool:
    if pid == os.getpid():
        return False  # this process reads its own earlier (in-process) attempt: that one is over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        now = _proc_start(pid)
        return now is None or now == started
    return True
