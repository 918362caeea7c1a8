"""A Hydra grid sweeper that validates every job before any starts and runs identical jobs once.

Registered as ``hydra/sweeper=harness`` (the default in conf/config.yaml). Jobs are composed with the
same config loader the launchers use; each is typed, validated and planned (data files, schedule,
target modules) so that a bad value anywhere in the grid stops the sweep before any training. Jobs
whose resolved run configuration hashes equal (full FT at budgets 4 and 8) are kept once.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from harness.config import config_hash
from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

#: statuses of the jobs of the last sweep run in this process (read by the CLI for its exit code)
LAST_SWEEP: list[dict[str, Any]] = []


class HarnessSweeper(BasicSweeper):
    """BasicSweeper + validation of every job + de-duplication of identical configurations."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None) -> None:
        # BasicSweeper.__init__ calls super(BasicSweeper, self), which breaks once Hydra's plugin scan has
        # re-executed its module (the name then points at a new class); set its attributes directly.
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = None
        self.config = None
        self.launcher = None

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:  # type: ignore[override]
        from harness.run import plan

        assert self.hydra_context is not None and self.config is not None
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        kept: list[list[str]] = []
        seen: dict[str, list[str]] = {}
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            with_hydra = OmegaConf.to_container(cfg, resolve=False)
            assert isinstance(with_hydra, dict)
            with_hydra.pop("hydra", None)
            try:
                key = config_hash(plan(with_hydra).cfg)
            except HarnessError as e:
                raise type(e)(f"{e} [sweep job: {' '.join(job) or '(no overrides)'}]") from None
            if key in seen:
                log.info("sweep: %s is the same run as %s; running it once", " ".join(job), " ".join(seen[key]))
                continue
            seen[key] = job
            kept.append(job)
        if not kept:
            raise ConfigError("sweep: no job to run")
        log.info("sweep: %d jobs (%d identical configurations merged)", len(kept), len(jobs) - len(kept))
        if max_batch_size is None or max_batch_size <= 0:
            return [kept]
        return [kept[i : i + max_batch_size] for i in range(0, len(kept), max_batch_size)]

    def sweep(self, arguments: List[str]) -> Any:
        LAST_SWEEP.clear()
        returns: Sequence[Sequence[Any]] = super().sweep(arguments)
        for batch in returns:
            for r in batch:
                LAST_SWEEP.append(r.return_value if isinstance(r.return_value, dict) else {"status": "done"})
        n_bad = sum(1 for r in LAST_SWEEP if r.get("status") != "done")
        log.info("sweep finished: %d done, %d not done", len(LAST_SWEEP) - n_bad, n_bad)
        return returns
