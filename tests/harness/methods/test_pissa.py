"""PiSSA: snapshots measure against the pretrained weight (not PEFT's residual) and rebuild PEFT's merge."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.config import to_typed, validate
from harness.errors import ConfigError
from harness.models import load_model
from harness.run import plan
from tests.conftest import TINY, compose_cfg
from tests.harness.test_snapshots import snapshot_run


def test_snapshot_w0_is_the_pretrained_weight_and_rebuild_equals_peft_merge(tmp_path: Path) -> None:
    from analysis.decomposition import open_snapshots

    model, cb, _ = snapshot_run(tmp_path / "snapshots", "pissa")
    p = plan(compose_cfg([*TINY, "method=pissa"]))
    torch.manual_seed(0)
    pretrained = dict(load_model(p.cfg.model, p.model_conf).named_modules())
    w0 = load_file(tmp_path / "snapshots" / "w0.safetensors")
    snaps = open_snapshots(tmp_path)
    plain = dict(copy.deepcopy(model).merge_and_unload().named_modules())
    for tr in cb.tracked:
        name = tr.ref.name
        assert torch.equal(w0[name], pretrained[name].weight.detach())  # bit for bit the pretrained weight
        assert not torch.allclose(w0[name], tr.base.weight.detach(), atol=1e-3)  # ... not PEFT's residual
        assert torch.allclose(snaps.merged_weight(name, 0), w0[name].double(), atol=1e-5)
        rebuilt = snaps.merged_weight(name, 6)
        assert torch.allclose(rebuilt, plain[name].weight.detach().double(), rtol=1e-5, atol=1e-5), name
        assert not torch.allclose(rebuilt, w0[name].double(), atol=1e-3)  # it moved


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4"])
def test_init_options_are_accepted(init: str) -> None:
    validate(to_typed(compose_cfg([*TINY, "method=pissa", f"method.init={init}"])))


@pytest.mark.parametrize("init", ["gaussian", "pissa_niter_0", "pissa_niter_"])
def test_bad_init_names_the_key(init: str) -> None:
    with pytest.raises(ConfigError, match=r"method\.init"):
        validate(to_typed(compose_cfg([*TINY, "method=pissa", f"method.init={init}"])))
