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
from harness.record import DISPLAY_KEYS, LEGACY_METHODS, method_display
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
        assert d["method"] == method and {k: d[k] for k in DISPLAY_KEYS} == cls.display()
        assert (d["method_label"], d["method_color"]) == (cls.label, cls.color)
    p = plan(tiny_cfg(f"method={method}"))
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(load_model(p.cfg.model, p.model_conf), str(tmp_path / "adapter"))
    merged = dict(copy.deepcopy(loaded).merge_and_unload().named_modules())
    snaps = open_snapshots(tmp_path)
    final = max(snaps.steps)
    for name in snaps.matrices["name"]:
        w = merged[name].weight.detach().double()
        assert torch.allclose(w, snaps.merged_weight(name, final), rtol=1e-5, atol=1e-5), name


def test_older_records_are_shown_as_the_methods_show_themselves() -> None:
    """The display table for records written before the methods recorded it equals what each method file
    declares now (the methods it knows), and a method's own display is complete and read back as recorded."""
    for name in LEGACY_METHODS:
        assert method_display(name) == METHODS[name].display(), name
    for name, cls in METHODS.items():
        shown = cls.display()
        assert set(shown) == set(DISPLAY_KEYS) and all(v is not None for v in shown.values()), name
        assert method_display(name, shown) == shown
    assert [n for n, c in METHODS.items() if c.baseline] == ["full"]
