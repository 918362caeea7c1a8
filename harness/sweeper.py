"""A Hydra grid sweeper that validates every job before any starts and runs identical jobs once.

Registered as ``hydra/sweeper=harness`` (the default in conf/config.yaml). Jobs are composed with the
same config loader the launchers use; each is typed, validated and planned (data files, schedule,
target modules) so that a bad value anywhere in the grid stops the sweep before any training. Jobs
whose resolved run configuration hashes equal (full FT at budgets 4 and 8) are kept once.

Re-running a sweep: a ``${now:...}`` in ``hydra.sweep.dir`` (the default) is replaced by
``<preset>_<hash of the jobs' config hashes>``, and job folders are named after their config hash, so the
same command finds the same folders: jobs already ``done`` are skipped (``train.force=true`` re-runs them),
failed or killed ones run again (from their checkpoint), and one failing job never stops the others. A job
whose configuration already has a folder in the sweep dir goes to that folder even when its default name
(``<job num>_...``) changed, e.g. in a grown grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf, open_dict, read_write

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
        self._existing: Optional[dict[str, str]] = None  # config hash -> folder of the runs already in the sweep dir

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:  # type: ignore[override]
        from harness.run import plan

        assert self.hydra_context is not None and self.config is not None
        self._existing = None
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        kept: list[list[str]] = []
        seen: dict[str, list[str]] = {}
        configs: list[Any] = []
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
            configs.append((key, cfg))
        if not kept:
            raise ConfigError("sweep: no job to run")
        log.info("sweep: %d jobs (%d identical configurations merged)", len(kept), len(jobs) - len(kept))
        self._pin_sweep_dir(sorted(seen))
        kept = [job + self._job_folder(num, key, cfg) for num, (job, (key, cfg)) in enumerate(zip(kept, configs))]
        if max_batch_size is None or max_batch_size <= 0:
            return [kept]
        return [kept[i : i + max_batch_size] for i in range(0, len(kept), max_batch_size)]

    def _pin_sweep_dir(self, hashes: list[str]) -> None:
        """Replace ``${now:...}`` in ``hydra.sweep.dir`` by ``<preset>_<hash of the job hashes>`` (unless the
        user gave the folder), for this process and, through ``hydra.overrides.hydra``, for every job config."""
        assert self.config is not None
        raw = str(OmegaConf.to_container(self.config.hydra.sweep, resolve=False)["dir"])
        given = any(str(o).startswith("hydra.sweep.dir=") for o in self.config.hydra.overrides.hydra)
        if given or "${now:" not in raw:
            return
        preset = self.config.hydra.runtime.choices.get("experiment") or "sweep"
        sweep_id = f"{preset}_{hashlib.sha256(','.join(hashes).encode()).hexdigest()[:8]}"
        pinned = re.sub(r"\$\{now:[^}]*\}", sweep_id, raw)
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = pinned
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={pinned}")
        log.info("sweep folder: %s (the same command finds it again; hydra.sweep.dir=... to choose one)", pinned)

    def _job_folder(self, num: int, key: str, cfg: Any) -> list[str]:
        """Extra overrides placing job ``num`` where an earlier run of its configuration is (so that it is skipped
        or resumed), or beside a folder holding another configuration under its default name."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return []
        if self._existing is None:
            self._existing = {}
            for f in sorted(sweep_dir.glob("*/run.json")):
                try:
                    self._existing.setdefault(json.loads(f.read_text()).get("config_hash"), f.parent.name)
                except (OSError, ValueError, AttributeError):
                    self._existing.setdefault(f"unreadable:{f.parent.name}", f.parent.name)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.job.num = num
        default = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        folder = self._existing.get(key)
        if folder is None and (sweep_dir / default / "run.json").is_file():
            folder = f"{default}_{key[:8]}"  # the default name holds another configuration (e.g. a grown grid)
        if folder is None or folder == default:
            return []
        if "'" in folder:
            log.warning("sweep: job %d: cannot point Hydra at folder %r (a quote in its name); using %s", num, folder,
                        default)
            return []
        log.info("sweep: job %d (%s) goes to %s", num, default, folder)
        return [f"hydra.sweep.subdir='{folder}'"]

    def sweep(self, arguments: List[str]) -> Any:
        LAST_SWEEP.clear()
        returns: Sequence[Sequence[Any]] = super().sweep(arguments)
        for batch in returns:
            for r in batch:
                LAST_SWEEP.append(r.return_value if isinstance(r.return_value, dict) else {"status": "done"})
        n_bad = sum(1 for r in LAST_SWEEP if r.get("status") != "done")
        n_skip = sum(1 for r in LAST_SWEEP if r.get("skipped"))
        log.info("sweep finished: %d done (%d of them skipped: done before), %d not done", len(LAST_SWEEP) - n_bad,
                 n_skip, n_bad)
        return returns
