"""The one module that uses Hydra's private API (``hydra._internal``); everything else imports from here.

Hydra has no public way to run an app and get its result back: ``@hydra.main`` returns nothing. :func:`run_app`
does what ``@hydra.main`` does for ``argv`` (Hydra's ``_run_hydra`` and ``_run_app``) and returns what Hydra's
``Hydra.run`` / ``Hydra.multirun`` return: the job's return value, or the sweeper's. The harness's sweeper and
launcher build on Hydra's basic ones (:data:`BasicSweeper`, :data:`BasicLauncher`), and the CLI checks flags
with Hydra's own parser (:func:`get_args_parser`). ``tests/harness/test_hydra_compat.py`` fails when a Hydra
release changes any of this; :data:`TESTED_HYDRA` are the versions it passes with.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser

__all__ = ["BasicLauncher", "BasicSweeper", "HydraResult", "TESTED_HYDRA", "get_args_parser", "run_app"]

#: Hydra releases this adapter is tested with: lowest included, highest excluded
TESTED_HYDRA: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 3), (1, 4))

#: the Hydra version base of the harness's configs (as ``@hydra.main(version_base=...)``)
VERSION_BASE = "1.3"


@dataclass(frozen=True)
class HydraResult:
    """What :func:`run_app` returns. ``mode``: ``run`` (``value``: the task function's return value),
    ``multirun`` (``value``: the sweeper's ``sweep`` return value) or ``info`` (--cfg, --info, --hydra-help,
    shell completion: Hydra printed it; ``value`` None)."""

    mode: str
    value: Any = None


def run_app(task_function: Callable[[Any], Any], argv: list[str], *, config_path: str,
            config_name: str) -> HydraResult:
    """``@hydra.main(config_path, config_name)(task_function)`` called with ``argv`` as its command line, but
    returning the result. Exceptions of the job (and of composing its config) propagate as they are."""
    from hydra import version
    from hydra._internal.utils import _run_hydra

    version.setbase(VERSION_BASE)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.experimental_rerun is not None:
        from hydra.main import _get_rerun_conf

        return HydraResult("run", task_function(_get_rerun_conf(args.experimental_rerun, args.overrides)))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        _run_hydra(args=args, args_parser=parser, task_function=task_function, config_path=config_path,
                   config_name=config_name)
        return HydraResult("info")
    return _launch(task_function, args, config_path=args.config_path or config_path,
                   config_name=args.config_name or config_name)


def _launch(task_function: Callable[[Any], Any], args: argparse.Namespace, *, config_path: str,
            config_name: Optional[str]) -> HydraResult:
    """Hydra's ``_run_hydra`` + ``_run_app`` for a run or a multirun, keeping the result."""
    import os

    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (create_automatic_config_search_path,
                                       detect_calling_file_or_module_from_task_function, detect_task_name)
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import SearchPathException
    from hydra.types import RunMode

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    if args.config_dir is not None:
        conf_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(conf_dir):
            raise SearchPathException(f"Additional config directory '{conf_dir}' not found")
        search_path.prepend(provider="command-line", path=f"file://{conf_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                     config_search_path=search_path)
    try:
        overrides = list(args.overrides)
        mode = hydra.get_mode(config_name=config_name, overrides=overrides)
        if mode is None or (args.multirun and mode == RunMode.RUN):
            mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
            overrides.append(f"hydra.mode={mode.name}")
        if mode == RunMode.RUN:
            ret = hydra.run(config_name=config_name, task_function=task_function, overrides=overrides)
            return HydraResult("run", ret.return_value)
        return HydraResult("multirun", hydra.multirun(config_name=config_name, task_function=task_function,
                                                      overrides=overrides))
    finally:
        GlobalHydra.instance().clear()
