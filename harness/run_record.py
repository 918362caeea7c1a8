"""The run's own record writer: ``run.json`` (status, environment, config hash), through harness.record.

Status: ``running`` → ``done`` | ``failed`` (with the error); ``replacing`` while an earlier attempt's outputs
are removed (:meth:`RunRecord.replacing`, written before anything is deleted). A re-run of a crashed or failed
run is a new *attempt* in the same folder: ``attempt`` counts them and ``resumed_from`` lists the checkpoint
step each one continued from (None: started over); ``checkpoint`` names the latest checkpoint's step. Reading
(validated, the derived ``crashed``) is :func:`harness.record.read_run`.
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
from harness.record import (DONE, FAILED, RUN_FILE, RUNNING, SCHEMA_VERSION, proc_start,
                            write_json_atomic)
from harness.redact import redact, redact_obj

log = logging.getLogger(__name__)


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
        self.path = run_dir / RUN_FILE
        self.data: dict[str, Any] = {}

    def start(self, status: str = RUNNING, **fields: Any) -> None:
        """A new run: status running (``replacing``: written before an earlier attempt's outputs are removed),
        this process and host, attempt 1."""
        self.data = {"schema": SCHEMA_VERSION, "status": status, "started": time.time(), "pid": os.getpid(),
                     "host": socket.gethostname(), "proc_start": proc_start(os.getpid()), "attempt": 1,
                     "resumed_from": [], **fields}
        self.data.setdefault("git", git_info())
        write_json_atomic(self.path, self.data)

    def restart(self, previous: dict[str, Any], *, resumed_from: int | None, status: str = RUNNING,
                **fields: Any) -> None:
        """Another attempt of the same run in this folder (after a kill or a failure), from a checkpoint's
        step or from scratch (``resumed_from=None``); the earlier attempt's end and error are kept."""
        prev = {k: previous.get(k) for k in ("status", "started", "ended", "error", "host", "pid")}
        history = list(previous.get("attempts", [])) + [prev]
        self.start(status, **fields)
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

    def running(self) -> None:
        """The earlier attempt's outputs are gone (the record said ``replacing`` meanwhile): this attempt runs."""
        self.update(status=RUNNING)

    def done(self) -> None:
        self.update(status=DONE, ended=time.time(), error=None)

    def failed(self, error: str) -> None:
        self.update(status=FAILED, ended=time.time(), error=error)

    def checkpointed(self, step: int) -> None:
        """The latest checkpoint is the one after ``step``."""
        self.update(checkpoint={"step": step, "time": time.time()})


def _write_in_place(path: Path, text: str) -> None:
    """Overwrite ``path`` within its own blocks (a full disk has none for a new file): not atomic, so only the
    fallback of :meth:`RunRecord.update`."""
    data = redact(text).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)  # a link there is not written through
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
