"""VeRA: shared frozen projections, trained scaling vectors; the snapshot rebuild equals PEFT's merge."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from harness.config import to_typed, validate
from harness.errors import ConfigError
from tests.conftest import TINY, compose_cfg
from tests.harness.test_snapshots import snapshot_run


def test_rebuild_equals_peft_merge_and_projections_are_shared(tmp_path: Path) -> None:
    from analysis.decomposition import open_snapshots

    model, cb, _ = snapshot_run(tmp_path / "snapshots", "vera")
    snaps = open_snapshots(tmp_path)
    plain = dict(copy.deepcopy(model).merge_and_unload().named_modules())
    for tr in cb.tracked:
        rebuilt = snaps.merged_weight(tr.ref.name, 6)
        assert torch.allclose(rebuilt, plain[tr.ref.name].weight.detach().double(), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(rebuilt, snaps.w0(tr.ref.name).double())
    # every matrix's A is a slice of one shared random matrix, frozen through training
    a = [snaps.tensors(6, tr.ref.name)["A"] for tr in cb.tracked]
    widest = max(a, key=lambda t: t.shape[1])
    assert all(torch.equal(t, widest[:, : t.shape[1]]) for t in a)
    assert torch.equal(snaps.tensors(0, cb.tracked[0].ref.name)["A"], a[0])


@pytest.mark.parametrize("override, key", [("method.r=0", "method.r"), ("method.dropout=1.0", "method.dropout"),
                                           ("method.projection_prng_key=-1", "method.projection_prng_key")])
def test_bad_keys_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(to_typed(compose_cfg([*TINY, "method=vera", override])))
