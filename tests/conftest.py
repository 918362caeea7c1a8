"""Shared fixtures: the shared data folder, composing configs like the CLI does, tiny runs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import harness.config  # noqa: F401  (ceil_mul resolver)
import harness.methods  # noqa: F401  (the methods register their config schemas and resolvers, e.g. adalora_r)

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
GLUE = SHARED / "data" / "glue"
CONF = ROOT / "conf"

warnings.filterwarnings("ignore", message=r".*validated against ConfigStore schema.*")


def compose_cfg(overrides: list[str] | None = None) -> dict[str, Any]:
    """The job config the CLI would compose for these overrides (without the hydra node)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    d = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(d, dict)
    d.pop("hydra", None)
    return d


TINY = ["model=tiny_bert", "tracking=none", "train.max_steps=6", "train.eval_every=3", "train.log_every=2",
        "train.batch_size=8", "task.max_train_samples=64", "task.max_eval_samples=32", "train.progress=false"]


def method_args(method: str) -> list[str]:
    """Overrides selecting ``method`` for a TINY run (AdaLoRA masks every step in such short runs)."""
    return [f"method={method}", *(["method.deltaT=1"] if method == "adalora" else [])]


@pytest.fixture(autouse=True)
def _glue_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the shared GLUE folder through $GLUE_DIR (as the README says)."""
    monkeypatch.setenv("GLUE_DIR", str(GLUE))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _logging_as_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI run earlier in this process leaves Hydra's job logging behind: loggers that existed then disabled,
    console handlers on streams pytest has closed since (a later warning would print a logging error). Every
    test starts without them."""
    import logging

    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith(("harness", "analysis")) and isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers
                                           if not getattr(getattr(h, "stream", None), "closed", False)])


@pytest.fixture
def one_thread() -> Any:
    """Tiny models on a shared 2-core machine: one torch thread is several times faster than two."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_decoder_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real causal-LM runs (tiny Llama on chain_sum, 4 steps, a forget set and the text sample), LoRA and full
    FT at seed 0, made once per session: ``<folder>/lora``, ``<folder>/full`` (read-only for the tests)."""
    pytest.importorskip("reasoning_gym")
    import torch

    from harness.run import run
    from tests.harness.problems.test_causal_lm import lm_args

    root = tmp_path_factory.mktemp("decoder_runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in ("lora", "full"):
            run(compose_cfg(lm_args(root / "rg", *method_args(method))), root / method)
    finally:
        torch.set_num_threads(n)
    return root


@pytest.fixture
def tiny_cfg() -> Any:
    """Factory: composed config of a tiny-model run plus extra overrides."""
    return lambda *extra: compose_cfg([*TINY, *extra])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
