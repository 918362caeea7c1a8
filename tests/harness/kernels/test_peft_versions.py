"""The fast paths run only with the PEFT versions they are tested with; otherwise PEFT's own path, one warning."""

from __future__ import annotations

import logging
from typing import Iterator

import peft
import pytest
import torch
from peft.tuners.lora.dora import DoraLinearLayer

from harness import kernels
from harness.models import load_model
from harness.run import plan
from tests.conftest import TINY, compose_cfg, method_args


@pytest.fixture
def fresh_warnings() -> Iterator[None]:
    kernels._warn_untested.cache_clear()
    yield
    kernels._warn_untested.cache_clear()


def test_installed_peft_is_a_tested_one() -> None:
    """The pinned range holds the PEFT this suite runs with (the fused tests are meaningful)."""
    assert kernels.fast_path_available("test", peft.__version__)


@pytest.mark.parametrize("version, ok", [("0.21.0", True), ("0.21.9.dev0", True), ("0.20.0", False),
                                         ("0.22.0", False), ("1.0.0", False), ("0.13.2", False)])
def test_version_range(version: str, ok: bool, fresh_warnings: None) -> None:
    assert kernels.fast_path_available("x", version) is ok


@pytest.mark.parametrize("method, fused_type", [("dora", "FusedDoraLinearLayer"), ("adalora", "FusedAdaLoraModel")])
def test_untested_peft_falls_back_to_peft_with_one_warning(method: str, fused_type: str, fresh_warnings: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    def wrapped() -> list[str]:
        p = plan(compose_cfg([*TINY, *method_args(method)]))
        torch.manual_seed(0)
        model = p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head)
        return [type(m).__name__ for m in model.modules()]

    assert fused_type in wrapped()  # the tested version: the harness's fast path
    monkeypatch.setattr(peft, "__version__", "0.99.0")
    with caplog.at_level(logging.WARNING, logger="harness.kernels"):
        types = wrapped()
        wrapped()
    assert fused_type not in types
    if method == "dora":
        assert DoraLinearLayer.__name__ in types  # PEFT's own DoRA layer
    warnings = [r for r in caplog.records if "outside the versions it is tested with" in r.getMessage()]
    assert len(warnings) == 1 and "0.99.0" in warnings[0].getMessage()
