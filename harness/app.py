"""The Hydra application: composes ``conf/`` and runs one job (or one job of a sweep).

:func:`job` is the task function; :func:`run_hydra` runs it through Hydra for a command line and returns the
outcome (:class:`harness.hydra_compat.HydraResult`): a run's result dict, or a sweep's
:class:`harness.sweeper.SweepOutcome`. Nothing is passed through module state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import harness.config  # noqa: F401  (registers the ceil_mul resolver before composition)
from harness.errors import HarnessError
from harness.hydra_compat import HydraResult, run_app
from harness.record import ERROR_FILE
from harness.run import run
from harness.run_folder import RunBusy
from harness.tracking import run_name

log = logging.getLogger(__name__)


def register_plugins() -> None:
    """Make ``hydra/sweeper=harness`` and ``hydra/launcher=packed`` resolvable without Hydra's plugin scan,
    which cannot list packages installed in editable mode (or not installed: running from a checkout)."""
    from harness.launcher import PackedLauncher
    from harness.sweeper import HarnessSweeper

    known = Plugins.instance().class_name_to_class
    known.setdefault("hydra_plugins.harness_sweeper.HarnessSweeper", HarnessSweeper)
    known.setdefault("hydra_plugins.harness_sweeper.PackedLauncher", PackedLauncher)


register_plugins()


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run_hydra(argv: list[str]) -> HydraResult:
    """Hydra's command line ``argv`` (flags first, then overrides) run with :func:`job` on ``conf/``."""
    return run_app(job, argv, config_path=CONF_DIR, config_name="config")


def job(cfg: DictConfig) -> dict[str, Any]:
    """One job; returns its outcome: ``status`` done | failed | invalid (bad input: a HarnessError) |
    skipped-running (another process runs it now), ``run_dir``, ``error``, ``skipped``, ``main_metric_value``.
    A failing run is recorded (run.json, error.txt) and, in a sweep, logged in one line (a single run's bad
    input is the CLI's to print); in a sweep the other jobs go on."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    spec = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(spec, dict)
    name = run_name(spec)
    group = Path(hc.sweep.dir).name if multirun else None
    preset = hc.runtime.choices.get("experiment")
    hydra_files = tuple(n for n in (hc.output_subdir, f"{hc.job.name}.log") if n)  # Hydra wrote them just now
    try:
        summary = run(spec, run_dir, name=name, group=group, job_num=hc.job.num if multirun else None,
                      foreign_ok=hydra_files, tags=(preset,) if preset else ())
        result = {"status": "done", "run_dir": str(run_dir), "main_metric_value": summary.get("main_metric_value"),
                  "skipped": bool(summary.get("skipped"))}
    except RunBusy as e:
        if multirun:
            log.warning("job %s skipped: %s", name, e)
        result = {"status": "skipped-running", "run_dir": str(run_dir), "error": str(e), "skipped": True}
    except HarnessError as e:
        if multirun:  # a single run's is reported by the CLI as one line (exit 2)
            log.error("job %s: %s", name, e)
        result = {"status": "invalid", "run_dir": str(run_dir), "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one failing job never stops the sweep
        from harness.run import describe_failure

        result = {"status": "failed", "run_dir": str(run_dir), "error": describe_failure(e)}
        if (run_dir / ERROR_FILE).is_file():
            log.error("run %s failed: %s (traceback in %s)", name, result["error"], run_dir / ERROR_FILE)
        else:  # failed before its record was written (or the disk was full): the traceback goes to the log
            log.error("run %s failed: %s", name, result["error"], exc_info=True)
    return result
