"""A disk that fills up during snapshots: the run fails with a clear message, and every file written before
is intact (checksums match the index), with no half-written temporary left. Needs root to mount a small
tmpfs; skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from harness.run import run
from tests.conftest import TINY, compose_cfg


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 KiB tmpfs (W0 of tiny_bert is ~100 KB; each LoRA snapshot ~25 KB plus the index)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_snapshots(small_disk: Path) -> None:
    from analysis.decomposition import open_snapshots

    run_dir = small_disk / "run"
    cfg = compose_cfg([*TINY, "method=lora", "train.max_steps=60", "snapshot=every", "snapshot.every=1",
                       "snapshot.log_metrics=false", "train.log_every=100", "train.eval_every=100",
                       "train.checkpoint_every=0"])
    with pytest.raises(OSError):
        run(cfg, run_dir)
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "failed"
    assert rec["error"].startswith("disk full") and "free space" in rec["error"] and "intact" in rec["error"]
    snaps = open_snapshots(run_dir)
    assert len(snaps.steps) >= 2  # some snapshots were written before the disk filled up...
    assert snaps.verify() == []  # ...and every one of them still matches its checksum
    leftovers = [p.name for p in run_dir.rglob(".*tmp*")]
    assert leftovers == []
