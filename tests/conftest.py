"""Shared fixtures: one torch thread, the GLUE folder (SST-2 cut short for fast tests), composing configs like the
CLI does (cached), tiny runs."""

from __future__ import annotations

import copy
import functools
import os
import warnings
from pathlib import Path
from typing import Any

# Tiny models on a shared 2-core machine: one torch thread is several times faster than two, and far faster while
# the other core is busy (the two OpenMP threads wait on each other: a 0.8 s tiny run took 6-17 s on a loaded
# machine). Set before torch is imported, so the CLI processes the tests start inherit it; slow tests get the
# machine's threads back (_threads below).
_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import harness.config  # noqa: F401  (ceil_mul resolver)
import harness.methods  # noqa: F401  (the methods register their config schemas and resolvers, e.g. adalora_r)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
GLUE = SHARED / "data" / "glue"
CONF = ROOT / "conf"

warnings.filterwarnings("ignore", message=r".*validated against ConfigStore schema.*")


def compose_cfg(overrides: list[str] | None = None) -> dict[str, Any]:
    """The job config the CLI would compose for these overrides (without the hydra node); a copy of its own."""
    return copy.deepcopy(_composed(tuple(overrides or [])))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    """Hydra reads and merges the YAML files anew on every compose (0.13 s); the same overrides compose the
    same config within a session (unresolved: nothing from the environment is read here). Errors are not kept."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    d = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(d, dict)
    d.pop("hydra", None)
    return d


TINY = ["model=tiny_bert", "tracking=none", "train.max_steps=6", "train.eval_every=3", "train.log_every=2",
        "train.batch_size=8", "task.max_train_samples=64", "task.max_eval_samples=32", "train.progress=false"]


def method_args(method: str) -> list[str]:
    """Overrides selecting ``method`` for a TINY run (AdaLoRA masks every step in such short runs)."""
    return [f"method={method}", *(["method.deltaT=1"] if method == "adalora" else [])]


#: SST-2 rows a fast test's $GLUE_DIR holds (of 67,349)
FAST_SST2_ROWS = 2000


@pytest.fixture(scope="session")
def fast_glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared GLUE folder with SST-2's train.tsv cut to its first FAST_SST2_ROWS rows (the other tasks and
    SST-2's dev.tsv as they are). A run reads and checks every row of its task's train file: 0.25 s for SST-2's
    67,349 rows, on each of the hundreds of tiny runs and plans of the fast suite. Tests of the real files name the
    shared folder (conftest.GLUE) themselves, and slow tests get it as $GLUE_DIR."""
    root = tmp_path_factory.mktemp("glue")
    for task in sorted(GLUE.iterdir()):
        if task.name != "SST-2":
            (root / task.name).symlink_to(task)
            continue
        (root / task.name).mkdir()
        for f in task.iterdir():
            if f.name != "train.tsv":
                (root / task.name / f.name).symlink_to(f)
        with (task / "train.tsv").open(encoding="utf-8") as src:
            head = [line for _, line in zip(range(FAST_SST2_ROWS + 1), src)]  # the header and the first rows
        (root / task.name / "train.tsv").write_text("".join(head), encoding="utf-8")
    return root


@pytest.fixture(scope="session", autouse=True)
def _fast_glue_dir(fast_glue: Path) -> Any:
    """$GLUE_DIR for module fixtures too (they are set up before _glue_dir)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLUE_DIR", str(fast_glue))
        yield


@pytest.fixture(autouse=True)
def _glue_dir(request: pytest.FixtureRequest, fast_glue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees a GLUE folder through $GLUE_DIR (as the README says): slow tests the shared one, fast
    tests the same with SST-2's training file cut short (fast_glue)."""
    slow = request.node.get_closest_marker("slow") is not None
    monkeypatch.setenv("GLUE_DIR", str(GLUE if slow else fast_glue))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _logging_as_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A CLI run earlier in this process leaves Hydra's job logging behind: loggers that existed then disabled,
    console handlers on streams pytest has closed since (a later warning would print a logging error), the root
    level at ERROR (a dry run's hydra/hydra_logging=disabled: a later warning would not reach caplog). Every
    test starts without them."""
    import logging

    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith(("harness", "analysis")) and isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers
                                           if not getattr(getattr(h, "stream", None), "closed", False)])
    level = root.level
    root.setLevel(logging.WARNING)  # a fresh process's (setLevel, not the attribute: it clears loggers' caches)
    yield
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Fast tests run on one torch thread (set at import, above). Slow tests (real models, multi-process runs)
    get the machine's threads, as a user's run has them."""
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    if _OMP_NUM_THREADS is None:
        monkeypatch.delenv("OMP_NUM_THREADS")
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", _OMP_NUM_THREADS)
    # torch's default intra-op count is the number of cores, as its inter-op count (which OMP_NUM_THREADS leaves)
    torch.set_num_threads(int(_OMP_NUM_THREADS) if _OMP_NUM_THREADS else torch.get_num_interop_threads())
    yield
    torch.set_num_threads(1)


@pytest.fixture
def one_thread() -> Any:
    """One torch thread for this test, whatever the session's count (fast tests have one already)."""
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
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection imported (torch, transformers, pandas … and the test modules) out of the garbage
    collector's sight: a full collection walks every live object, 0.3 s and more each in this process (54 of them
    took 21 s of 80 in four test files, most from benchmarks.bench's gc.collect per measured method); modules
    live for the whole session anyway. Objects the tests make are collected as before."""
    import gc

    gc.collect()
    gc.freeze()
