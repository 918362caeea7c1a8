"""Where analysis commands write: only to ``-o/--out`` (checked before any work), by default a new folder
under the current directory, never into the run or sweep folders they read."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from harness.run_folder import folder_problem


class BadOption(ValueError):
    """An option's value is unusable; the message names the option and the fix (exit 2)."""


def default_out(command: str) -> Path:
    """A new folder name under the current directory: ``analysis-<command>-<YYYYmmdd-HHMMSS>[-N]``."""
    base = Path.cwd() / f"analysis-{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while os.path.lexists(path):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_folder(path: Path, option: str) -> Path:
    """``path`` is a folder that exists or can be created, and can be written into; BadOption naming
    ``option`` otherwise. Nothing is left behind (the probe is an empty folder, removed again)."""
    target = Path(path).expanduser().absolute()
    bad = folder_problem(target, ".analysis-probe-")
    if bad is None:
        return target
    if bad.kind == "file":
        raise BadOption(f"{option}: {bad.probe} is a file, not a folder; give a folder to write into")
    if bad.kind == "long":
        raise BadOption(f"{option}: a name of {bad.size} bytes is over the file system's limit of "
                        f"{bad.limit}; give a shorter path")
    raise BadOption(f"{option}: cannot write into {bad.probe} ({bad.reason}); give a writable folder")


def check_file(path: Path, option: str) -> Path:
    """``path`` can be written as a file (not a folder; its folder can be created and written into)."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise BadOption(f"{option}: {target} is a folder; give a file name")
    check_folder(target.parent, option)
    return target


def out_folder(given: Optional[Path | str], option: str, command: str) -> Path:
    """The checked output folder: ``given``, or a new one from :func:`default_out`."""
    return check_folder(Path(given), option) if given else default_out(command)
