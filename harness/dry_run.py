"""``--dry-run``: the run, or every job of a sweep, with its folder and what it would do there; nothing is
written (no run folder, no sweep folder, no Hydra files).

Each job is validated as for a real run (a bad value exits 2), then its folder's record decides, as
:func:`harness.run.attempt_for` does for a real run: ``run`` (new), ``skip (done)``, ``resume from step N``
(a checkpoint), ``run again`` (an earlier attempt without a checkpoint, or ``train.force=true``), or
``blocked: <why>`` (another configuration's record, or a live process running it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.errors import ConfigError


def describe(job: dict[str, Any], folder: Path, *, name: str) -> dict[str, str]:
    """One job: its short name, folder and action (see the module docstring). Raises ConfigError/DataError
    for an invalid configuration."""
    from harness.run import attempt_for, plan

    typed = plan(job).cfg
    try:
        attempt = attempt_for(folder, typed)
    except ConfigError as e:
        action = f"blocked: {e}"
    else:
        if attempt.kind == "resume" and attempt.checkpoint is not None:
            action = f"resume from step {attempt.checkpoint.step}"
        else:
            action = {"new": "run", "skip": "skip (done)", "restart": "run again"}.get(attempt.kind, attempt.kind)
    return {"name": name, "folder": str(folder), "action": action}


def single(overrides: list[str]) -> list[dict[str, str]]:
    """The one run that ``python -m harness OVERRIDES`` would start (composed with Hydra's compose API, so no
    run folder is created)."""
    from hydra import compose, initialize_config_dir

    from harness.options import CONF
    from harness.tracking import run_name

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    folder = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    job = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(job, dict)
    job.pop("hydra", None)
    return [describe(job, folder, name=run_name(job))]


def table(rows: list[dict[str, str]]) -> str:
    """The jobs as aligned text, with a count per action."""
    head = ("#", "name", "action", "folder")
    body = [(str(i), r["name"], r["action"], r["folder"]) for i, r in enumerate(rows)]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(3)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(x[:3], widths)) + "  " + x[3] for x in (head, *body)]
    counts: dict[str, int] = {}
    for r in rows:
        kind = r["action"].split(" ", 1)[0].rstrip(":")
        counts[kind] = counts.get(kind, 0) + 1
    lines.append(f"dry run: {len(rows)} job(s): " + ", ".join(f"{n} {k}" for k, n in counts.items())
                 + "; nothing was written")
    return "\n".join(lines)
