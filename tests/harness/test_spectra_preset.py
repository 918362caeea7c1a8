"""The ``spectra`` preset (conf/experiment/spectra.yaml): the sweep docs/spectra.md describes, with every matrix
rebuildable (full FT keeps its matrices), validated as a run would be."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import to_typed, validate
from harness.families import MATRIX_TYPES
from tests.conftest import compose_cfg
from tests.harness.test_cli import cli


def test_full_ft_keeps_every_matrix_at_every_snapshot() -> None:
    cfg = to_typed(compose_cfg(["experiment=spectra", "method=full"]))
    validate(cfg)
    encoder_types = [t for t in MATRIX_TYPES if t != "Wg"]  # MiniLM has no gated FFN
    assert sorted(cfg.snapshot.full_weights) == sorted(encoder_types) and cfg.snapshot.full_steps is None
    assert cfg.snapshot.enabled and cfg.train.max_steps == 1000 and not cfg.train.bf16_frozen


@pytest.mark.slow  # validates all 30 jobs (about a minute on 2 cores)
def test_the_sweep_is_30_runs(tmp_path: Path) -> None:
    r = cli("--dry-run", "-m", "spectra", f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "30 job(s): 30 run; nothing was written" in r.stdout.splitlines()[-1]
    jobs = [ln.split()[1] for ln in r.stdout.splitlines()[1:-1]]
    # full FT has no rank: 2 lrs × 3 seeds; LoRA, DoRA: 2 ranks × 2 lrs × 3 seeds
    assert sum(j.startswith("full-") for j in jobs) == 6 and sum(j.startswith("lora-b16") for j in jobs) == 6
