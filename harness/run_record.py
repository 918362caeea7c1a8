"""The run folder's record: ``run.json`` (status, environment, config hash) written atomically."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file + rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        self.data = {"status": "running", "started": time.time(), "pid": os.getpid(), **fields}
        self.data.setdefault("git", git_info())
        write_json_atomic(self.path, self.data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json_atomic(self.path, self.data)

    def done(self) -> None:
        self.update(status="done", ended=time.time(), error=None)

    def failed(self, error: str) -> None:
        self.update(status="failed", ended=time.time(), error=error)


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run.json of a run folder; a ``running`` run whose process is gone on this host is ``crashed``."""
    path = run_dir / "run.json"
    if not path.is_file():
        return {"status": "missing"}
    data = json.loads(path.read_text())
    if data.get("status") == "running" and data.get("host", socket.gethostname()) == socket.gethostname():
        pid = data.get("pid")
        if pid and not _alive(int(pid)):
            data["status"] = "crashed"
            data["error"] = "the process ended without recording an end (killed or crashed)"
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
