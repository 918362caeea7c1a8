"""The Hydra application: composes ``conf/`` and runs one job (or one job of a sweep)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import harness.config  # noqa: F401  (registers the ceil_mul resolver before composition)
from harness.errors import HarnessError
from harness.record import ERROR_FILE
from harness.run import run
from harness.run_folder import RunBusy
from harness.summaries import job_finished
from harness.tracking import run_name

log = logging.getLogger(__name__)

#: user errors of single runs in this process (the CLI prints them and exits with status 2)
USER_ERRORS: list[HarnessError] = []
#: outcome of every job run in this process: status done | failed | invalid | skipped-running (another process
#: runs it now), run_dir, error, skipped
RESULTS: list[dict[str, Any]] = []


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


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    """One job. A failing run is recorded (run.json, error.txt) and reported in one line; in a sweep the
    other jobs go on."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(job, dict)
    name = run_name(job)
    group = Path(hc.sweep.dir).name if multirun else None
    preset = hc.runtime.choices.get("experiment")
    hydra_files = tuple(n for n in (hc.output_subdir, f"{hc.job.name}.log") if n)  # Hydra wrote them just now
    try:
        summary = run(job, run_dir, name=name, group=group, job_num=hc.job.num if multirun else None,
                      foreign_ok=hydra_files, tags=(preset,) if preset else ())
        result = {"status": "done", "run_dir": str(run_dir), "main_metric_value": summary.get("main_metric_value"),
                  "skipped": bool(summary.get("skipped"))}
    except RunBusy as e:
        if not multirun:
            USER_ERRORS.append(e)
        else:
            log.warning("job %s skipped: %s", name, e)
        result = {"status": "skipped-running", "run_dir": str(run_dir), "error": str(e), "skipped": True}
    except HarnessError as e:
        if not multirun:  # reported by the CLI as one line (exit 2), not through Hydra's job report
            USER_ERRORS.append(e)
        else:
            log.error("job %s: %s", name, e)
        result = {"status": "invalid", "run_dir": str(run_dir), "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one failing job never stops the sweep
        from harness.run import describe_failure

        result = {"status": "failed", "run_dir": str(run_dir), "error": describe_failure(e)}
        if (run_dir / ERROR_FILE).is_file():
            log.error("run %s failed: %s (traceback in %s)", name, result["error"], run_dir / ERROR_FILE)
        else:  # failed before its record was written (or the disk was full): the traceback goes to the log
            log.error("run %s failed: %s", name, result["error"], exc_info=True)
    RESULTS.append(result)
    job_finished()
    return result
