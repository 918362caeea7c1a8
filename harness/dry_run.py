"""``--dry-run``: the run, or every job of a sweep, with its folder and what it would do there; nothing is
written (no run folder, no sweep folder, no Hydra files).

Each job is validated as for a real run, with the same checks (values, sizes, writable folders, one folder per
job; a bad value exits 2), then its folder's lock and record decide, as :func:`harness.run.attempt_for` does for
a real run: ``run`` (new), ``skip (done)``, ``resume from step N`` (a checkpoint), ``run again`` (an earlier
attempt without a checkpoint, or ``train.force=true``), or ``blocked: <why>`` (another configuration's record, a
damaged record, or a live process running it). The dry run exits with the status the real command would:
:func:`exit_status`. Each job also shows its optimizer steps, the examples it trains on (steps × batch ×
grad_accum) and an estimated time from a measured step time of its model, task, method and batch on this kind
of device (harness/estimates.py; none where nothing comparable was measured); the total sums the jobs that would
run, one after another, and every estimate names the measurement it comes from.

A two-stage sweep (``hydra.sweeper.select``, the ``compare`` preset) lists its stage-1 jobs so, then states
stage 2 (:class:`Stage2Plan`): its jobs per grid point, and, for the grid points whose stage-1 runs are all
done already, the value chosen from them and those stage-2 jobs with their folders and actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.estimates import duration


BUSY = "blocked (running): "
BLOCKED = "blocked: "


def describe(job: dict[str, Any], folder: Path, *, name: str, key: str = "hydra.run.dir") -> dict[str, str]:
    """One job: its short name, folder and action (see the module docstring). Raises ConfigError/DataError
    for an invalid configuration or a folder it cannot write (``key`` names that folder's setting)."""
    from harness.run import attempt_for, check_paths, plan
    from harness.run_folder import RunLock

    planned = plan(job)
    typed = planned.cfg
    check_paths(typed, folder, key)
    busy = RunLock(folder).busy() if folder.is_dir() else None
    try:
        if busy:
            raise ConfigError(busy)
        attempt = attempt_for(folder, typed)
    except ConfigError as e:
        action = f"{BUSY if busy else BLOCKED}{e}"
    else:
        if attempt.kind == "resume" and attempt.checkpoint is not None:
            action = f"resume from step {attempt.checkpoint.step}"
        else:
            action = {"new": "run", "skip": "skip (done)", "restart": "run again"}.get(attempt.kind, attempt.kind)
    return {"name": name, "folder": str(folder), "action": action, **cost(typed, planned.total_steps, action)}


def cost(typed: Any, total: int, action: str) -> dict[str, str]:
    """``steps`` (the run's optimizer steps), ``examples`` (steps × batch × grad_accum), ``seconds`` (the
    estimated time of what ``action`` leaves to run: all steps, those after a resume's checkpoint, none for a
    skipped or blocked job; empty without a measurement) and ``estimate`` (the measurement's label, or empty),
    as text. ``typed``: the job's RunConfig."""
    from harness.estimates import device_kind, lookup

    t = typed.train
    measured = lookup(typed.model.name, typed.task.name, typed.method.name, t.batch_size, device_kind(t.device))
    if action in ("run", "run again"):
        left = total
    elif action.startswith("resume from step "):
        left = max(0, total - int(action.rsplit(" ", 1)[1]))
    else:
        left = 0
    seconds = "" if measured is None else f"{left * t.grad_accum * measured.seconds:.3f}"
    return {"steps": str(total), "examples": str(total * t.batch_size * t.grad_accum), "seconds": seconds,
            "estimate": "" if measured is None else measured.label()}


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


def _sources(rows: list[dict[str, str]]) -> dict[str, int]:
    """Each distinct estimate label of the rows that cost time, numbered from 1 in order of appearance."""
    out: dict[str, int] = {}
    for r in rows:
        if r.get("estimate") and r.get("seconds") and float(r["seconds"]) > 0:
            out.setdefault(r["estimate"], len(out) + 1)
    return out


def _time_cell(r: dict[str, str], sources: dict[str, int]) -> str:
    """``≈ 3m00s [1]``; ``-`` for a job that runs nothing; ``no estimate`` without a measurement."""
    if r.get("seconds") and float(r["seconds"]) == 0:
        return "-"
    if not r.get("estimate"):
        return "-" if r["action"].startswith(("skip", BUSY, BLOCKED)) else "no estimate"
    return f"≈ {duration(float(r['seconds']))} [{sources[r['estimate']]}]"


def _job_lines(rows: list[dict[str, str]], first: int = 0, sources: Optional[dict[str, int]] = None) -> list[str]:
    """The jobs as aligned text under a header line, numbered from ``first``: name, action, steps, examples,
    estimated time (``[n]``: the n-th of ``sources``), folder."""
    sources = _sources(rows) if sources is None else sources
    head = ("#", "name", "action", "steps", "examples", "time", "folder")
    body = [(str(i), r["name"], r["action"], r.get("steps", ""),
             f"{int(r['examples']):,}" if r.get("examples") else "", _time_cell(r, sources), r["folder"])
            for i, r in enumerate(rows, start=first)]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(6)]
    return ["  ".join(f"{c:<{w}}" for c, w in zip(x[:6], widths)) + "  " + x[6] for x in (head, *body)]


def estimate_lines(rows: list[dict[str, str]], sources: Optional[dict[str, int]] = None) -> list[str]:
    """The estimated total of the jobs that would run (one after another) and the measurements behind it."""
    sources = _sources(rows) if sources is None else sources
    running = [r for r in rows if _time_cell(r, sources) != "-"]
    if not running:
        return []
    known = [float(r["seconds"]) for r in running if r.get("estimate")]
    unknown = len(running) - len(known)
    head = (f"estimated time: ≈ {duration(sum(known))} for {len(known)} job(s) run one after another"
            if known else "estimated time: no estimate")
    head += f"; {unknown} job(s) with no estimate (no measured step time of their setup)" if unknown else ""
    lines = [head + (" — estimates from measured step times, not a promise: another machine or load changes them"
                     if known else "")]
    return lines + [f"  [{n}] {label}" for label, n in sources.items()]


def _counts(rows: list[dict[str, str]], of: Optional[int] = None) -> str:
    """``7 job(s): 1 skip, 6 run`` (``2 of 4 job(s): …`` with ``of``)."""
    counts: dict[str, int] = {}
    for r in rows:
        kind = "blocked" if r["action"].startswith((BUSY, BLOCKED)) else r["action"].split(" ", 1)[0].rstrip(":")
        counts[kind] = counts.get(kind, 0) + 1
    return (f"{len(rows)}{f' of {of}' if of is not None else ''} job(s)"
            + (": " + ", ".join(f"{n} {k}" for k, n in counts.items()) if rows else ""))


def table(rows: list[dict[str, str]]) -> str:
    """The jobs as aligned text, with a count per action and the estimated time."""
    return "\n".join([*_job_lines(rows), *estimate_lines(rows), f"dry run: {_counts(rows)}; nothing was written"])


def exit_status(rows: list[dict[str, str]], *, multirun: bool) -> int:
    """The status the real command would exit with (bad input already exits 2 before any row): a single run
    that is blocked exits 2 (another configuration's or a damaged record, a live holder); a sweep goes on with
    its other jobs and exits 1 when a job is blocked by a record (reported ``invalid``), 0 when only by a live
    process (``skipped-running``)."""
    blocked = [r["action"] for r in rows if r["action"].startswith((BUSY, BLOCKED))]
    if not blocked:
        return 0
    if not multirun:
        return 2
    return 1 if any(a.startswith(BLOCKED) for a in blocked) else 0


@dataclass
class Stage2Plan:
    """Stage 2 of a two-stage sweep (``hydra.sweeper.select``) as far as it is known before stage 1 runs:
    ``chosen`` holds the grid points whose stage-1 runs are all done (label → the value chosen from them, None
    when none scored: no stage 2 there), ``rows`` their stage-2 jobs as :func:`describe` lists them."""

    key: str
    values: list[float]
    seeds: list[int]
    metric: str  # the stage-1 score, ``valid/{}``: the main metric goes in the braces
    points: list[str]  # every grid point's label, in order
    chosen: dict[str, Optional[float]] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)


def two_stage(stage1: list[dict[str, str]], plan: Stage2Plan) -> str:
    """Stage 1's jobs as :func:`table` lists them, then the plan of stage 2."""
    metric = plan.metric.format("<main metric>")
    per_point, n = len(plan.seeds), len(plan.points)
    sources = _sources(stage1 + plan.rows)
    lines = [f"stage 1: every grid point at {plan.key} = {', '.join(map(str, plan.values))}, seed "
             f"{plan.seeds[0]}; the value with the best {metric} is chosen per grid point",
             *_job_lines(stage1, sources=sources),
             f"stage 2: the chosen {plan.key} with seeds {', '.join(map(str, plan.seeds))}: {per_point} job(s) per "
             f"grid point, {per_point * n} for the {n} grid point(s), the seed-{plan.seeds[0]} one being the stage-1 "
             f"run of the chosen value (found done, skipped)"]
    for label, value in plan.chosen.items():
        lines.append(f"  {label}: " + (f"{plan.key}={value}, chosen from its finished stage-1 runs"
                                       if value is not None else f"no stage-1 run has a {metric} score: no stage 2"))
    waiting = n - len(plan.chosen)
    if waiting:
        lines.append(f"  {'the other ' if plan.chosen else ''}{waiting} grid point(s): {plan.key} is chosen when "
                     f"their stage-1 jobs have run; their stage-2 folders are known then")
    if plan.rows:
        lines += _job_lines(plan.rows, first=len(stage1), sources=sources)
    known = (f", known so far: {_counts(plan.rows, of=per_point * n)}" if plan.chosen
             else f": {per_point * n} job(s) after stage 1")
    estimates = estimate_lines(stage1 + plan.rows, sources)
    lines += estimates
    if waiting and estimates:
        lines.append(f"  (stage 2 of the {waiting} grid point(s) still waiting for stage 1 is not in the estimate)")
    lines.append(f"dry run: stage 1: {_counts(stage1)}; stage 2{known}; nothing was written")
    return "\n".join(lines)
