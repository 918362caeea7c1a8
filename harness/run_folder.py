"""A run folder's ownership: one writer at a time (``.lock``) and a record of what the harness wrote there
(``.harness_manifest.json``). See docs/reliability.md.

Lock: ``<run>/.lock`` holds ``{"pid", "host", "since"}`` (JSON text) and an exclusive ``flock`` for the run's
whole life. The file is created complete (written under a temporary name, then hard-linked into place) and
removed at release, so a holder's details can always be read; a lock file left by a dead process (its flock
vanished with it) is taken over.

Manifest: ``<run>/.harness_manifest.json`` = ``{"version": 1, "entries": [top-level names the harness writes
there], "contents": [files inside those of them that are folders, as listed at the end of the last attempt],
"contents_complete": bool}``. Entries are added *before* the harness creates them (a kill in between leaves a
listed name that does not exist, which is harmless). Cleaning (``train.force=true``, a re-run) removes only
entries; a folder that is neither empty nor a harness run folder is refused before anything is written.

Removal (:func:`remove_entry`): every deletion the harness makes in a run folder (cleaning, checkpoint pruning,
temporaries) goes through it. It never follows a link: a link is removed as a link, a folder on the way that
is a link or a mount point stops it, and nothing outside the run folder is reached. A harness name that is a
link at the top of the run folder is refused at claim (the harness writes only real files and folders).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from harness.errors import ConfigError, HarnessError
from harness.record import (LOCK_FILE, MANIFEST_FILE, PID_MAX, RECORD_FILES, RUN_FILE, alive, temp_owner,
                            write_json_atomic)

log = logging.getLogger(__name__)

LOCK = LOCK_FILE
MANIFEST = MANIFEST_FILE
#: the empty folders :func:`folder_problem` creates for a moment to see whether a folder is writable
PROBE_PREFIX = ".harness-probe-"
#: what a run folder written before manifests existed may hold (all of it the harness's)
LEGACY_ENTRIES = (*RECORD_FILES, "snapshots", "checkpoints", "adalora_ranks.jsonl", "adalora_scores", "adapter",
                  "model", "wandb")


class RunBusy(HarnessError):
    """Another live process holds this run folder's lock."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run>/.lock`` (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunBusy` naming its holder; a dead holder's file is taken over."""
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                if self._create():
                    return
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read_holder(fd)
                current = self._is_current(fd)
                os.close(fd)
                if current:
                    raise RunBusy(self._busy_message(holder)) from None
                continue  # the file was replaced meanwhile (a release or a take-over): look again
            if not self._is_current(fd):
                os.close(fd)  # released (unlinked) between our open and flock
                continue
            log.warning("%s: taking over the lock of a process that is gone (%s)", self.run_dir,
                        _describe(_read_holder(fd)))
            os.unlink(self.path)  # held: nobody else can be using it; a fresh complete file replaces it
            os.close(fd)
        raise OSError(f"{self.path}: could not take the lock (the file keeps changing)")

    def _create(self) -> bool:
        """A complete lock file, locked, linked into place; False when another process linked one first."""
        tmp = self.run_dir / f"{LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}) + "\n"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, text.encode())
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.link(tmp, self.path)
        except FileExistsError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self.fd = fd
        return True

    def busy(self) -> Optional[str]:
        """Without taking it or writing anything: the line :meth:`acquire` would refuse with while a live
        process holds the lock, else None."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return self._busy_message(_read_holder(fd))
        finally:
            os.close(fd)  # closing drops a lock this probe took
        return None

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the lock's path."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _busy_message(self, holder: dict[str, Any]) -> str:
        return (f"{self.run_dir}: running in {_describe(holder)}; wait for it, or pass "
                f"hydra.run.dir=<another folder>")

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing when not held)."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    """``pid P on HOST since T`` from a lock file's content; a value that is not what the harness writes shows
    as ``?`` (the flock, not the file, decides who holds the lock)."""
    if not holder:
        return "another process"
    pid = holder.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and 1 <= pid <= PID_MAX else "?"
    host, since = (str(holder.get(k))[:80] if isinstance(holder.get(k), str) else "?" for k in ("host", "since"))
    return f"pid {pid} on {host} since {since}"


class Manifest:
    """``.harness_manifest.json``: the names the harness wrote into a run folder (see the module docstring)."""

    def __init__(self, run_dir: Path, entries: Iterable[str] = (), contents: Iterable[str] = (),
                 complete: bool = False) -> None:
        self.run_dir = run_dir
        self.entries = set(entries)
        self.contents = set(contents)
        self.complete = complete

    @classmethod
    def load(cls, run_dir: Path) -> Optional["Manifest"]:
        """The folder's manifest; for a run folder from before manifests (run.json, no manifest) the known
        names it holds; None for a folder that is no harness run."""
        path = run_dir / MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries, contents = data["entries"], data.get("contents", [])
                if not all(isinstance(x, list) and all(isinstance(n, str) and _plain(n) for n in x)
                           for x in (entries, contents)):
                    raise ValueError("entries and contents must be lists of relative names inside the folder")
                return cls(run_dir, entries, contents, bool(data.get("contents_complete")))
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
                raise ConfigError(f"{path}: unreadable ({e}); choose a new hydra.run.dir, or delete the run "
                                  f"folder yourself") from None
        if (run_dir / RUN_FILE).is_file():
            return cls(run_dir, [n for n in LEGACY_ENTRIES if os.path.lexists(run_dir / n)])
        return None

    def save(self) -> None:
        write_json_atomic(self.run_dir / MANIFEST, {"version": 1, "entries": sorted(self.entries),
                                                    "contents": sorted(self.contents),
                                                    "contents_complete": self.complete})

    def foreign_inside(self) -> list[str]:
        """Files inside the harness's folders that it did not write (known only after an attempt that ended)."""
        if not self.complete:
            return []
        found = _files_inside(self.run_dir, self.entries)
        return sorted(f for f in found - self.contents if temp_owner(Path(f).name) is None)  # temps: reclaimed


def _plain(name: str) -> bool:
    """A relative name that stays inside the folder (no absolute path, no ``..``)."""
    return bool(name) and not os.path.isabs(name) and ".." not in Path(name).parts


def _files_inside(run_dir: Path, entries: Iterable[str]) -> set[str]:
    """Files (and links, as themselves) inside the entries that are real folders; links are not followed."""
    out: set[str] = set()
    for name in entries:
        top = run_dir / name
        if top.is_dir() and not top.is_symlink():
            for here, dirs, files in os.walk(top):  # followlinks=False: a link to a folder is listed, not entered
                base = Path(here)
                out.update(str((base / f).relative_to(run_dir)) for f in files)
                out.update(str((base / d).relative_to(run_dir)) for d in dirs if (base / d).is_symlink())
    return out


def _links(run_dir: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are symbolic links at the top of ``run_dir``."""
    return sorted(n for n in names if (run_dir / n).is_symlink())


def reclaim_temporaries(run_dir: Path, entries: Iterable[str]) -> list[str]:
    """Remove the temporaries a killed writer of this folder left (names of :func:`harness.record.temp_name`
    or a checkpoint being assembled, whose process is gone; never this process's), at the top and inside the
    harness's folders;
    called under the run's lock. Returns what was removed (relative names)."""
    removed = []
    places = [run_dir, *(run_dir / n for n in entries if (run_dir / n).is_dir() and not (run_dir / n).is_symlink())]
    for place in places:
        for here, dirs, files in os.walk(place):
            for name in [*files, *dirs]:
                pid = temp_owner(name)
                if pid is not None and pid != os.getpid() and not alive(pid):
                    rel = (Path(here) / name).relative_to(run_dir)
                    if remove_entry(run_dir, rel):
                        removed.append(str(rel))
            dirs[:] = [d for d in dirs if temp_owner(d) is None and not (Path(here) / d).is_symlink()]
            if place == run_dir:
                break  # the top only: inside, only the harness's folders are searched
    if removed:
        log.info("%s: removed temporaries of a killed writer: %s", run_dir, ", ".join(sorted(removed)))
    return removed


def _mount_points() -> list[Path]:
    """Mount points of this process's mount namespace (/proc/self/mountinfo; empty where unreadable)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) > 4:
            out.append(Path(parts[4].encode().decode("unicode_escape")))
    return out


def remove_entry(run_dir: Path, rel: str | Path) -> bool:
    """Remove ``run_dir/rel`` (a file, a link, or a folder with what it holds) without ever following a link:
    a link is removed as a link, links inside a folder likewise. OSError, removing nothing, when a folder on
    the way from ``run_dir`` is a link or not a folder, or when a mount point lies at or below it (its files
    are not the run's). False when there is nothing at ``rel``."""
    rel = Path(rel)
    if not _plain(str(rel)):
        raise ValueError(f"{rel}: not a name inside the run folder")
    parent = Path(run_dir)
    for part in rel.parts[:-1]:
        parent = parent / part
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "on the way is a link or a file, not a folder of the run; not removed "
                          "through it", str(parent))
    target = parent / rel.name
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(target)
        return True
    real = Path(os.path.realpath(target))
    inside = [m for m in _mount_points() if m == real or real in m.parents]
    if inside:
        raise OSError(errno.EBUSY, f"holds the mount point {inside[0]}; not removed (its files are not the run's)",
                      str(target))
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _clear_dir(fd, st.st_dev, target)
    finally:
        os.close(fd)
    os.rmdir(target)
    return True


def _clear_dir(fd: int, dev: int, where: Path) -> None:
    """Remove everything in the open folder ``fd`` (on device ``dev``), links as links, never leaving it."""
    with os.scandir(fd) as it:
        entries = list(it)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(e.name, dir_fd=fd)
            continue
        if st.st_dev != dev:
            raise OSError(errno.EXDEV, "another file system mounted inside the run folder; not removed",
                          str(where / e.name))
        sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            if not os.path.samestat(st, os.fstat(sub)):
                raise OSError(errno.EAGAIN, "changed while being removed", str(where / e.name))
            _clear_dir(sub, dev, where / e.name)
        finally:
            os.close(sub)
        os.rmdir(e.name, dir_fd=fd)


def _shown(run_dir: Path, names: Iterable[str], limit: int = 6) -> str:
    names = sorted(names)
    shown = [n + ("/" if (run_dir / n).is_dir() else "") for n in names[:limit]]
    return ", ".join(shown) + (f" and {len(names) - limit} more" if len(names) > limit else "")


class RunFolder:
    """A run folder claimed by this process: locked, checked, its manifest kept (see the module docstring)."""

    def __init__(self, run_dir: Path, lock: RunLock, manifest: Manifest, created: bool) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.manifest = manifest
        self.created = created
        self.started = False

    @classmethod
    def claim(cls, run_dir: Path, planned: Iterable[str], ignore: Iterable[str] = ()) -> "RunFolder":
        """Lock ``run_dir`` (created when missing) and check that the run may write ``planned`` names there.

        ``ignore``: names written into the folder by others this run (Hydra's ``.hydra/`` and job log).
        Raises :class:`RunBusy` or ConfigError, leaving the folder as it was.
        """
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        folder: Optional[RunFolder] = None
        try:
            try:
                lock.acquire()
            except OSError as e:
                raise ConfigError(f"{run_dir}: cannot take the run's lock ({e}); choose a writable hydra.run.dir") \
                    from None
            manifest = Manifest.load(run_dir)
            here = {n for n in os.listdir(run_dir) if n not in (LOCK, MANIFEST) and not n.startswith(f"{LOCK}.")
                    and not n.startswith(PROBE_PREFIX) and n not in set(ignore)}
            if manifest is None:
                if here:
                    raise ConfigError(f"{run_dir}: not empty and not a harness run folder (found "
                                      f"{_shown(run_dir, here)}); choose an empty folder or a new hydra.run.dir")
                manifest = Manifest(run_dir)
            links = _links(run_dir, here & (set(planned) | manifest.entries))
            if links:
                raise ConfigError(f"{run_dir}: {links[0]} is a symbolic link (to {os.readlink(run_dir / links[0])}); "
                                  f"the harness writes and removes only real files and folders of its run folder: "
                                  f"replace the link by a folder or file, or choose a new hydra.run.dir")
            clash = (here & set(planned)) - manifest.entries
            if clash:
                raise ConfigError(f"{run_dir}: holds {_shown(run_dir, clash)}, which the harness did not write and "
                                  f"would overwrite; move it away or choose a new hydra.run.dir")
            inside = manifest.foreign_inside()
            if inside:
                raise ConfigError(f"{run_dir}: holds {_shown(run_dir, inside)}, which the harness did not write, "
                                  f"inside its own folders (removed when the run is redone); move it out or choose "
                                  f"a new hydra.run.dir")
            folder = cls(run_dir, lock, manifest, created)
            reclaim_temporaries(run_dir, manifest.entries)
            return folder
        finally:
            if folder is None:
                lock.release()
                if created:
                    _remove_if_empty(run_dir)

    @property
    def owned(self) -> set[str]:
        """Names the harness wrote here (the only ones it may remove)."""
        return set(self.manifest.entries)

    def begin(self, planned: Iterable[str]) -> None:
        """An attempt starts: ``planned`` names are the harness's from now on (recorded before any is written)."""
        self.started = True
        self.manifest.entries.update(planned)
        self.manifest.complete = False
        self.manifest.save()

    def finish(self) -> None:
        """An attempt ended (done or failed): list the files now inside the harness's folders."""
        self.manifest.contents = _files_inside(self.run_dir, self.manifest.entries)
        self.manifest.complete = True
        self.manifest.save()

    def release(self) -> None:
        """Drop the lock; a folder created for a run that never started is removed again (when empty)."""
        self.lock.release()
        if self.created and not self.started:
            _remove_if_empty(self.run_dir)


@dataclass
class FolderProblem:
    """Why a folder cannot be created or written: ``kind`` file | long | unwritable, at ``probe`` (the
    nearest existing ancestor); for ``long`` the offending ``name``, its ``size`` in bytes and the ``limit``;
    for ``unwritable`` the OS ``reason``."""

    kind: str
    probe: Path
    name: str = ""
    size: int = 0
    limit: int = 0
    reason: str = ""


def folder_problem(target: Path, probe_prefix: str) -> Optional[FolderProblem]:
    """None when the folder ``target`` exists or can be created and written into: names within the file
    system's limits, the nearest existing ancestor a folder this process can create folders in (probed with
    an empty folder named ``probe_prefix…``, removed again). Nothing is left behind."""
    import tempfile

    probe = target
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        return FolderProblem("file", probe)
    limit = os.pathconf(probe, "PC_NAME_MAX")
    long = [part for part in target.parts if len(os.fsencode(part)) > limit]
    if long:
        return FolderProblem("long", probe, name=long[0], size=len(os.fsencode(long[0])), limit=limit)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=probe_prefix, dir=probe))
    except OSError as e:
        return FolderProblem("unwritable", probe, reason=str(e.strerror))
    return None


def check_creatable(path: str, key: str) -> None:
    """Raise ConfigError unless the folder ``path`` (the part before any ``${...}``) exists or can be created
    (:func:`folder_problem`)."""
    text = path.split("${", 1)[0]
    bad = folder_problem(Path(text or ".").expanduser().absolute(), PROBE_PREFIX)
    if bad is None:
        return
    if bad.kind == "file":
        raise ConfigError(f"{key}: {bad.probe} is a file, not a folder, so {path} cannot be created; choose another "
                          f"{key}=<folder>")
    if bad.kind == "long":
        raise ConfigError(f"{key}: the name '{bad.name[:40]}...' has {bad.size} bytes, over the "
                          f"file system's limit of {bad.limit}; choose a shorter {key}")
    raise ConfigError(f"{key}: cannot create folders in {bad.probe} ({bad.reason}); choose a writable "
                      f"{key}=<folder>")


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
