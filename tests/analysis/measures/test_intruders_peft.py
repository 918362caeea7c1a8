"""Intruder counts equal PEFT's own ``reduce_intruder_dimension`` (same k, ε) on the same matrices: a PEFT LoRA
model's layers, counted by PEFT (its log lines) and by :mod:`analysis.measures.intruders`."""

from __future__ import annotations

import re

import pytest
import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.intruders import reduce_intruder_dimension

from analysis.measures.intruders import EPSILON, TOP_K, intruders
from tests.harness.test_snapshots import perturb, tiny_model


def peft_counts(model: torch.nn.Module) -> dict[str, int]:
    """Intruders per LoRA layer as PEFT's function reports them (``<name>: Intruders: n`` / ``No intruders``)."""
    lines: list[str] = []
    reduce_intruder_dimension(model, top_k=TOP_K, threshold_epsilon=EPSILON, logging_sink=lines.append)
    out = {}
    for line in lines:
        if m := re.fullmatch(r"(.+): Intruders: (\d+)", line):
            out[m[1]] = int(m[2])
        elif m := re.fullmatch(r"(.+): No intruders", line):
            out[m[1]] = 0
    return out


@pytest.mark.parametrize("scale", [0.05, 0.5, 2.0])
def test_counts_equal_peft_reduce_intruder_dimension(scale: float, one_thread: None) -> None:
    model, _, _ = tiny_model("lora", "method.r=4")
    perturb(model, seed=1, scale=scale)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    with torch.no_grad():
        w0 = torch.stack([m.get_base_layer().weight.double() for m in layers.values() if m.get_base_layer().weight.shape == (32, 32)])
        w = torch.stack([(m.get_base_layer().weight + m.get_delta_weight("default")).double()
                         for m in layers.values() if m.get_base_layer().weight.shape == (32, 32)])
        others = {n: intruders(m.get_base_layer().weight.double()[None],
                               (m.get_base_layer().weight + m.get_delta_weight("default")).double()[None]).item()
                  for n, m in layers.items()}
    expected = peft_counts(model)
    assert set(expected) == set(layers) and len(layers) >= 6
    assert others == expected
    square = [n for n in layers if layers[n].get_base_layer().weight.shape == (32, 32)]
    assert intruders(w0, w).tolist() == [expected[n] for n in square]  # batched equals one by one
    if scale >= 2.0:
        assert max(expected.values()) > 0  # the test compares non-trivial counts
