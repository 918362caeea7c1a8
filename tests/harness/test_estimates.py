"""The measured step times behind ``--dry-run``'s estimates: each is found, as quoted, in the document it names,
and gives its seconds; a lookup matches model, task, method, batch and device kind, else no estimate."""

from __future__ import annotations

import re

import pytest

from harness.estimates import STEP_TIMES, device_kind, duration, lookup
from tests.conftest import ROOT


@pytest.mark.parametrize("m", STEP_TIMES, ids=lambda m: f"{m.method}-{m.device}")
def test_each_measurement_is_in_its_source(m) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / m.source).read_text()
    assert m.quoted in text
    clock = re.fullmatch(r"(\d+)m(\d+)s", m.quoted)
    if clock:  # a run's wall over the sweep's 300 steps
        assert m.seconds == pytest.approx((int(clock[1]) * 60 + int(clock[2])) / 300)
    else:  # steps per second
        assert m.seconds == pytest.approx(1 / float(m.quoted))
    assert m.source in m.label() and m.quoted in m.label() and "measured" in m.label()


def test_lookup_matches_the_whole_configuration() -> None:
    cpu = lookup("minilm", "sst2", "dora", 32, "cpu")
    assert cpu is not None and cpu.device == "cpu" and cpu.seconds == pytest.approx(296 / 300)
    gpu = lookup("minilm", "sst2", "lora", 32, "NVIDIA H200")
    assert gpu is not None and gpu.device == "H200"
    for args in (("tiny_bert", "sst2", "lora", 32, "cpu"), ("minilm", "rte", "lora", 32, "cpu"),
                 ("minilm", "sst2", "vera", 32, "cpu"), ("minilm", "sst2", "lora", 16, "cpu"),
                 ("minilm", "sst2", "lora", 32, "NVIDIA H100 80GB HBM3"), ("minilm", "sst2", "lora", 32, None)):
        assert lookup(*args) is None, args


def test_device_kind_and_duration() -> None:
    assert device_kind("cpu") == "cpu" and device_kind("mps") is None
    assert [duration(s) for s in (4.4, 180, 1499, 3900)] == ["4s", "3m00s", "24m59s", "1h05m"]
