"""Every method's records name its display label and colour; PiSSA's and VeRA's adapters load with PEFT's own
loader onto the pretrained model and give the weights the snapshots rebuild."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.methods import METHODS
from harness.models import load_model
from harness.run import plan, run


@pytest.mark.parametrize("method", ["pissa", "vera"])
def test_records_carry_label_and_colour_and_the_adapter_reloads(method: str, tiny_cfg: Any, tmp_path: Path) -> None:
    from peft import PeftModel

    from analysis.decomposition import open_snapshots

    summary = run(tiny_cfg(f"method={method}"), tmp_path)
    rec = json.loads((tmp_path / "run.json").read_text())
    cls = METHODS[method]
    for d in (rec, summary):
        assert (d["method"], d["method_label"], d["method_color"]) == (method, cls.label, cls.color)
    p = plan(tiny_cfg(f"method={method}"))
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(load_model(p.cfg.model, p.model_conf), str(tmp_path / "adapter"))
    merged = dict(copy.deepcopy(loaded).merge_and_unload().named_modules())
    snaps = open_snapshots(tmp_path)
    final = max(snaps.steps)
    for name in snaps.matrices["name"]:
        w = merged[name].weight.detach().double()
        assert torch.allclose(w, snaps.merged_weight(name, final), rtol=1e-5, atol=1e-5), name
