"""One W0 file per base model: a content-addressed store shared by the runs' snapshots (docs/snapshots.md).

A run's W0 file (safetensors, one tensor (out, in) per tracked matrix) is stored once as
``<store>/<sha256 hex>.safetensors`` and hard-linked into the run as ``snapshots/w0.safetensors``: the link
costs no space and keeps every run self-contained, so deleting a run or the store breaks no other run.
Where the file system refuses the link (another device, no hard links) the run only references the store
through meta.json's ``w0`` entry: ``store`` (relative to the snapshots folder) and ``store_absolute``.

Readers (:func:`read_w0`) try, in order: the run's own ``w0.safetensors`` (a link, or the per-run copy of
runs made before the store or with ``snapshot.w0_store=run``), the recorded store path (relative, then
absolute), and ``<sha256 hex>.safetensors`` in the default store of the run's current place
(:func:`default_store`: ``<outputs>/w0``). A file is used only when its sha256 matches meta.json's checksum.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from harness.record import alive, temp_name

log = logging.getLogger(__name__)

W0_FILE = "w0.safetensors"
STORE_DIR = "w0"
#: ``snapshot.w0_store`` value keeping a full copy of W0 in each run (the layout before the store)
PER_RUN = "run"
#: Hydra's run and sweep folders (conf/config.yaml) live in ``<outputs>/runs`` and ``<outputs>/multirun``
OUTPUT_PARENTS = ("runs", "multirun")


class W0NotFound(FileNotFoundError):
    """No intact copy of a run's W0 file was found (the message lists the places tried and the fix)."""


def checksum(data: bytes) -> str:
    """``sha256:<hex>`` of a file's bytes (the checksum format of meta.json and the index)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def default_store(run_dir: Path) -> Path:
    """``<outputs>/w0`` for a run below ``<outputs>/runs`` or ``<outputs>/multirun`` (the nearest such
    folder above it), otherwise ``w0/`` beside the run folder (a ``hydra.run.dir`` elsewhere)."""
    run_dir = Path(os.path.abspath(run_dir))
    for parent in run_dir.parents:
        if parent.name in OUTPUT_PARENTS:
            return parent.parent / STORE_DIR
    return run_dir.parent / STORE_DIR


def resolve_store(setting: Optional[str], run_dir: Path) -> Optional[Path]:
    """The store folder for ``snapshot.w0_store``: null -> :func:`default_store`; ``run`` -> None (a copy
    in each run); any other value is a path (``~`` expanded, relative to the working directory)."""
    if setting is None:
        return default_store(run_dir)
    if setting == PER_RUN:
        return None
    return Path(os.path.abspath(os.path.expanduser(setting)))


def store_path(store: Path, digest: str) -> Path:
    """``<store>/<hex>.safetensors`` for a checksum ``sha256:<hex>``."""
    return store / f"{digest.removeprefix('sha256:')}.safetensors"


def _intact(path: Path, digest: str) -> bool:
    return path.is_file() and checksum(path.read_bytes()) == digest


def publish(store: Path, data: bytes, digest: str) -> tuple[Path, bool]:
    """Put ``data`` (checksum ``digest``) into the store once; returns (its path, whether this call wrote it).

    An existing file is reused only when its checksum matches; a corrupt one is replaced. The file appears
    whole or not at all: written to a temporary of its own, fsynced, then linked under its final name,
    which fails if another writer got there first. Concurrent writers of one digest thus all succeed and
    leave one file (one inode); the losers check the winner's file and drop their temporary.
    """
    store.mkdir(parents=True, exist_ok=True)
    path = store_path(store, digest)
    reclaim(store)
    if _intact(path, digest):
        return path, False
    fd, name = tempfile.mkstemp(dir=store, prefix=f".{path.name}.", suffix=f".{socket.gethostname()}.tmp{os.getpid()}")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic "create if absent"
            return path, True
        except FileExistsError:
            if _intact(path, digest):
                return path, False
            log.warning("%s: checksum mismatch (corrupt store file); writing it again", path)
        except OSError as e:  # no hard links here: last rename wins, every writer's bytes are the same
            log.debug("%s: hard link refused (%s); renaming instead", store, e)
        os.replace(tmp, path)
        return path, True
    finally:
        tmp.unlink(missing_ok=True)


#: a temporary of :func:`publish`: ``.<hex>.safetensors.<random>.<host>.tmp<pid>``
_TEMP = re.compile(r"^\.[0-9a-f]{64}\.safetensors\.[^.]+\.(?P<host>.+)\.tmp(?P<pid>\d+)$")


def reclaim(store: Path) -> list[str]:
    """Remove the temporaries that writers on this host left in the store when they were killed (their
    process is gone); only names of :func:`publish`'s pattern, only files. Returns their names."""
    removed = []
    host = socket.gethostname()
    try:
        names = os.listdir(store)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        pid = int(m["pid"]) if m else 0
        if m is None or m["host"] != host or pid == os.getpid() or alive(pid) or not (store / name).is_file() \
                or (store / name).is_symlink():  # this process's own: another thread may be writing it
            continue
        try:
            (store / name).unlink()
            removed.append(name)
        except OSError as e:
            log.debug("%s: not removed (%s)", store / name, e)
    if removed:
        log.info("%s: removed %d temporary file(s) of killed writers", store, len(removed))
    return removed


def link_into(src: Path, dest: Path) -> bool:
    """Hard-link ``src`` as ``dest`` (replacing any earlier ``dest``); False, with ``dest`` removed, where
    the file system refuses (``src`` on another device, no hard links)."""
    tmp = temp_name(dest, "link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as e:
        log.info("cannot hard-link %s into %s (%s); the run references the store instead", src, dest.parent, e)
        dest.unlink(missing_ok=True)
        return False
    os.replace(tmp, dest)
    tmp.unlink(missing_ok=True)  # rename(2) leaves both names when they already were the same file
    return True


def locations(w0: Mapping[str, Any], folder: Path) -> list[Path]:
    """Where the W0 file of the snapshots folder ``folder`` may be, in the order tried (module docstring).

    ``w0``: meta.json's ``w0`` entry (``file``, ``checksum``, and for store runs ``store``, ``store_absolute``).
    """
    folder = Path(os.path.abspath(folder))
    out: list[Path] = []
    if w0.get("file"):
        out.append(folder / str(w0["file"]))
    if w0.get("store"):
        out.append(Path(os.path.normpath(folder / str(w0["store"]))))
    if w0.get("store_absolute"):
        out.append(Path(str(w0["store_absolute"])))
    if w0.get("checksum"):
        out.append(store_path(default_store(folder.parent), str(w0["checksum"])))
    return list(dict.fromkeys(out))


def read_w0(w0: Mapping[str, Any], folder: Path) -> tuple[Path, bytes]:
    """(path, bytes) of the first intact W0 file of :func:`locations`; W0NotFound listing every place tried
    (missing, or its checksum mismatch) and how to fix it. Without a recorded checksum (a run stopped
    before W0 was written) only the run's own file is read, unchecked."""
    digest = w0.get("checksum")
    tried = []
    for path in locations(w0, folder):
        if not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        data = path.read_bytes()
        got = checksum(data)
        if digest is None or got == digest:
            return path, data
        tried.append(f"{path} (checksum mismatch: file corrupt or changed after the run; expected "
                     f"{str(digest)[:19]}…, got {got[:19]}…)")
    name = f"{str(digest).removeprefix('sha256:')}.safetensors" if digest else W0_FILE
    raise W0NotFound(f"{folder}: no intact W0 file; tried {'; '.join(tried) or 'nothing'}. Fix: put the W0 file "
                     f"{name} (sha256 as in meta.json) at {Path(os.path.abspath(folder)) / W0_FILE} or at "
                     f"{default_store(Path(os.path.abspath(folder)).parent) / name}")
