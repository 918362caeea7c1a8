"""The Hydra adapter: the installed Hydra is one it is tested with, and the private API it uses is there with
the signatures it calls. A Hydra release that changes any of it fails here, by name."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import hydra
import pytest
from omegaconf import DictConfig

from harness import hydra_compat
from harness.hydra_compat import TESTED_HYDRA, BasicLauncher, BasicSweeper, get_args_parser, run_app

ROOT = Path(__file__).resolve().parents[2]


def _release(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.match(r"\d+(?:\.\d+)*", v).group(0).split("."))  # type: ignore[union-attr]


def test_installed_hydra_is_a_tested_release() -> None:
    low, high = TESTED_HYDRA
    assert low <= _release(hydra.__version__) < high, (
        f"Hydra {hydra.__version__} is outside TESTED_HYDRA {TESTED_HYDRA}: check harness/hydra_compat.py against "
        "its private API, then widen TESTED_HYDRA")


def _params(fn: Any) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_private_api_has_the_signatures_the_adapter_calls() -> None:
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (_run_hydra, create_automatic_config_search_path,
                                       detect_calling_file_or_module_from_task_function, detect_task_name)
    from hydra.main import _get_rerun_conf

    assert _params(Hydra.create_main_hydra2) == ["task_name", "config_search_path"]
    for fn in (Hydra.run, Hydra.multirun):
        assert _params(fn)[:3] == ["config_name", "task_function", "overrides"]
    assert _params(Hydra.get_mode)[:2] == ["config_name", "overrides"]
    assert _params(_run_hydra)[:5] == ["args", "args_parser", "task_function", "config_path", "config_name"]
    assert _params(create_automatic_config_search_path) == ["calling_file", "calling_module", "config_path"]
    assert _params(detect_calling_file_or_module_from_task_function) == ["task_function"]
    assert _params(detect_task_name) == ["calling_file", "calling_module"]
    assert _params(_get_rerun_conf) == ["file_path", "overrides"]
    # the harness's sweeper and launcher build on these
    assert _params(BasicSweeper.split_arguments) == ["overrides", "max_batch_size"]
    assert isinstance(inspect.getattr_static(BasicSweeper, "split_arguments"), staticmethod)
    for name in ("setup", "sweep", "validate_batch_is_legal", "_parse_config"):
        assert callable(getattr(BasicSweeper, name)), name
    assert _params(BasicLauncher.launch) == ["job_overrides", "initial_job_idx"]
    assert _params(BasicLauncher.setup) == ["hydra_context", "task_function", "config"]
    dests = {a.dest for a in get_args_parser()._actions}
    assert {"overrides", "help", "hydra_help", "version", "cfg", "resolve", "package", "run", "multirun",
            "shell_completion", "config_path", "config_name", "config_dir", "experimental_rerun", "info"} <= dests


def test_only_the_adapter_imports_hydra_internals() -> None:
    users = sorted(str(f.relative_to(ROOT)) for pkg in ("harness", "analysis") for f in (ROOT / pkg).rglob("*.py")
                   if "hydra._internal" in f.read_text())
    assert users == ["harness/hydra_compat.py"]


def _task(cfg: DictConfig) -> dict[str, Any]:
    return {"x": cfg.x}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "app.yaml").write_text("x: 1\n")
    return d


def test_run_app_returns_the_job_and_the_sweepers_values(conf: Path, tmp_path: Path) -> None:
    run = run_app(_task, ["x=5", f"hydra.run.dir={tmp_path / 'r'}"], config_path=str(conf), config_name="app")
    assert run == hydra_compat.HydraResult("run", {"x": 5})
    multi = run_app(_task, ["-m", "x=1,2", f"hydra.sweep.dir={tmp_path / 'm'}"], config_path=str(conf),
                    config_name="app")
    assert multi.mode == "multirun"
    assert [[r.return_value for r in batch] for batch in multi.value] == [[{"x": 1}, {"x": 2}]]  # BasicSweeper's
    # a job's exception reaches the caller as it is
    with pytest.raises(ZeroDivisionError):
        run_app(lambda cfg: 1 / 0, [f"hydra.run.dir={tmp_path / 'z'}"], config_path=str(conf), config_name="app")
    assert run_app(_task, ["--cfg", "job"], config_path=str(conf), config_name="app").mode == "info"
