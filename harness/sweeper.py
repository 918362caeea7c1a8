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

Two-stage selection (``hydra.sweeper.select``, the ``compare`` preset; docs/protocol.md): stage 1 runs every
grid point at each value of ``select.key`` with the first of ``select.seeds``; for every grid point the value
with the best validation main metric is chosen (``selection.json`` in the sweep dir); stage 2 runs the chosen
value with every seed (the stage-1 run of the first seed is the same configuration: found done and skipped).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from harness.config import config_hash
from harness.errors import ConfigError, HarnessError
from harness.hydra_compat import BasicLauncher, BasicSweeper
from harness import summaries
from harness.record import RUN_FILE, SELECTION_FILE, SEQUENTIAL_FILE, BadRecord, json_safe, read_run, read_summary, write_json_atomic

if TYPE_CHECKING:
    from harness.dry_run import Stage2Plan

log = logging.getLogger(__name__)

#: ``select.metric``: the stage-1 score of a candidate, read from its summary.json
SELECT_METRICS = {"valid": "valid/{}", "best_valid": "best_valid/{}"}


@dataclass
class SweepOutcome:
    """What :meth:`HarnessSweeper.sweep` returns (through Hydra's ``multirun``, to the CLI): ``jobs``, each job's
    outcome (:func:`harness.app.job`'s dict; the exit status comes from them); ``summary``, the text of
    ``<sweep>/summary.md`` ("" when not written). A dry run (``hydra.sweeper.dry_run=true``) launches nothing:
    ``dry_rows``, each job with what it would do (:func:`harness.dry_run.describe`), and for a two-stage sweep
    ``stage2``, the plan of stage 2."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    dry_rows: list[dict[str, str]] = field(default_factory=list)
    stage2: Optional["Stage2Plan"] = None


@dataclass
class Selection:
    """``hydra.sweeper.select``: choose ``key`` among ``values`` on validation (seed ``seeds[0]``), then run the
    choice with every seed. ``metric``: ``valid`` (the final validation main metric) or ``best_valid`` (the best
    over evaluation steps). Ties go to the value listed first. A choice at the edge of the values tried
    extends the grid that way, one value at a time (the edge times the ratio to its neighbour: ×2 for the
    default grid), at most ``extend`` values a side; a choice still at an edge then is marked so."""

    key: str = "train.lr_scale"
    values: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    metric: str = "valid"
    extend: int = 2

    @classmethod
    def parse(cls, node: Any) -> "Selection":
        """Typed and checked (ConfigError naming ``hydra.sweeper.select.<key>``)."""
        where = "hydra.sweeper.select"
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: must be a mapping with key, values, seeds, metric; got {node!r}")
        unknown = sorted(set(node) - {"key", "values", "seeds", "metric", "extend"})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key; known keys are key, values, seeds, metric, extend")
        sel = cls(**node)
        if not isinstance(sel.key, str) or not sel.key or sel.key == "seed":
            raise ConfigError(f"{where}.key: a config key to select, e.g. train.lr_scale; got {sel.key!r}")
        vals = sel.values
        if not isinstance(vals, list) or len(vals) < 1 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            raise ConfigError(f"{where}.values: a non-empty list of finite numbers, e.g. [0.5,1,2,4]; got {vals!r}")
        if len(set(vals)) != len(vals):
            raise ConfigError(f"{where}.values: listed twice in {vals}")
        seeds = sel.seeds
        if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool)
                                                              for x in seeds) or len(set(seeds)) != len(seeds):
            raise ConfigError(f"{where}.seeds: a non-empty list of distinct integers, e.g. [0,1,2]; got {seeds!r}")
        if not isinstance(sel.metric, str) or sel.metric not in SELECT_METRICS:
            raise ConfigError(f"{where}.metric: one of {', '.join(SELECT_METRICS)}, got {sel.metric!r}")
        if not isinstance(sel.extend, int) or isinstance(sel.extend, bool) or not 0 <= sel.extend <= 8:
            raise ConfigError(f"{where}.extend: values to add beyond an edge choice, an integer in 0..8; got {sel.extend!r}")
        sel.values = [float(v) for v in vals]
        return sel


@dataclass
class Sequential:
    """``hydra.sweeper.sequential``: run the grid at seeds 0..batch−1, then ``batch`` more at a time, until every
    contrast of the sweep is decided (:mod:`analysis.sequential`: an O'Brien-Fleming-type boundary for the
    planned looks, repeated p-values, the 96% interval printed) or ``max_seeds`` is reached. ``margin``: the
    practical margin (null: per metric)."""

    batch: int = 2
    max_seeds: int = 10
    margin: Optional[float] = None

    @classmethod
    def parse(cls, node: Any, select: Any) -> Optional["Sequential"]:
        """Typed and checked (ConfigError naming ``hydra.sweeper.sequential.<key>``); None when off (no node, or
        batch and max_seeds both null)."""
        where = "hydra.sweeper.sequential"
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        if node is None or (isinstance(node, dict) and node.get("batch") is None and node.get("max_seeds") is None):
            return None
        if select is not None:
            raise ConfigError(f"{where}: not together with hydra.sweeper.select; run the selection first, then a "
                              "sequential sweep at the chosen values")
        if not isinstance(node, dict) or sorted(set(node) - {"batch", "max_seeds", "margin"}):
            raise ConfigError(f"{where}: a mapping with batch, max_seeds, margin, e.g. {{batch: 2, max_seeds: 10}}; "
                              f"got {node!r}")
        seq = cls(**node)
        for key in ("batch", "max_seeds"):
            v = getattr(seq, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise ConfigError(f"{where}.{key}: an integer >= 2, got {v!r}")
        if seq.max_seeds < seq.batch:
            raise ConfigError(f"{where}.max_seeds: at least batch ({seq.batch}), got {seq.max_seeds}")
        if seq.margin is not None and not (isinstance(seq.margin, (int, float)) and 0 < seq.margin < math.inf):
            raise ConfigError(f"{where}.margin: a number > 0 in the metric's units (e.g. 0.01) or null, "
                              f"got {seq.margin!r}")
        return seq


class HarnessSweeper(BasicSweeper):
    """BasicSweeper + validation of every job + de-duplication of identical configurations."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None,
                 select: Optional[Any] = None, sequential: Optional[Any] = None, dry_run: bool = False) -> None:
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
        self.select = select  # hydra.sweeper.select (checked by Selection.parse when the sweep starts)
        self.sequential = sequential  # hydra.sweeper.sequential (checked by Sequential.parse when the sweep starts)
        self._hashes: dict[tuple[str, ...], str] = {}  # job overrides -> config hash (every job, merged or not)
        self._needs_validation = False
        self._progress: Optional[summaries.SweepProgress] = None
        self._task: Optional[summaries.CountingTask] = None
        self.dry_run = dry_run  # list the jobs and what each would do; launch nothing (the CLI's --dry-run)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """BasicSweeper's, with the task function wrapped to advance the sweep's bar (:class:`CountingTask`)."""
        self._task = summaries.CountingTask(task_function)
        super().setup(hydra_context=hydra_context, task_function=self._task, config=config)

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:  # type: ignore[override]
        return self._prepare(BasicSweeper.split_arguments(overrides, None)[0], max_batch_size)

    def _prepare(self, jobs: List[List[str]], max_batch_size: Optional[int], first_num: int = 0) -> List[List[List[str]]]:
        """Validate and de-duplicate ``jobs`` (override lists), place them in their folders, cut into batches;
        job numbers start at ``first_num`` (a later stage continues the numbering of the earlier one)."""
        from harness.run import MIN_SELECTION_EXAMPLES, plan

        assert self.hydra_context is not None and self.config is not None
        self._existing = None
        kept: list[list[str]] = []
        seen: dict[str, list[str]] = {}
        configs: list[Any] = []
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            with_hydra = OmegaConf.to_container(cfg, resolve=False)
            assert isinstance(with_hydra, dict)
            with_hydra.pop("hydra", None)
            try:
                planned = plan(with_hydra)
                typed = planned.cfg
                if self._needs_validation and not typed.task.validation_fraction > 0:
                    raise ConfigError("hydra.sweeper.select: selection is on the validation split, and this job has "
                                      "none; set task.validation_fraction (e.g. 0.1)")
                n_valid = len(planned.data.valid) if planned.data.valid is not None else 0
                if self._needs_validation and n_valid < MIN_SELECTION_EXAMPLES:
                    raise ConfigError(f"task.validation_fraction: the validation split has {n_valid} example(s); "
                                      f"choosing a value on it needs at least {MIN_SELECTION_EXAMPLES} (raise "
                                      f"task.validation_fraction or task.max_eval_samples)")
                key = config_hash(typed)
            except HarnessError as e:
                raise type(e)(f"{e} [sweep job: {' '.join(job) or '(no overrides)'}]") from None
            self._hashes[tuple(job)] = key
            if key in seen:
                log.info("sweep: %s is the same run as %s; running it once", " ".join(job), " ".join(seen[key]))
                continue
            seen[key] = job
            kept.append(job)
            configs.append((key, cfg, typed))
        if not kept:
            raise ConfigError("sweep: no job to run")
        log.info("sweep: %d jobs (%d identical configurations merged)", len(kept), len(jobs) - len(kept))
        self._pin_sweep_dir(sorted(seen))
        if self._progress is not None:
            self._progress.add(len(kept), Path(str(self.config.hydra.sweep.dir)))
        kept = [job + self._job_folder(first_num + i, key, cfg) for i, (job, (key, cfg, _)) in enumerate(zip(kept, configs))]
        self._check_folders(kept, configs, first_num)
        if max_batch_size is None or max_batch_size <= 0:
            return [kept]
        return [kept[i : i + max_batch_size] for i in range(0, len(kept), max_batch_size)]

    def _check_folders(self, jobs: List[List[str]], configs: list[Any], first_num: int) -> None:
        """Every job gets a folder of its own, and can write there (its W0 store too): ConfigError naming both
        jobs' overrides when two go to one folder (e.g. ``hydra.sweep.subdir=same``), before any job starts."""
        from harness.run import check_paths

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        owner: dict[str, list[str]] = {}
        for num, (job, (_, cfg, typed)) in enumerate(zip(jobs, configs), start=first_num):
            placed = [o.split("=", 1)[1].strip("'") for o in job if o.startswith("hydra.sweep.subdir=")]
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.job.num = num
            sub = placed[-1] if placed else str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            folder = os.path.normpath(os.path.abspath(sweep_dir / sub))
            mine = [o for o in job if not o.startswith("hydra.sweep.subdir=")]
            if folder in owner:
                first = owner[folder]
                a, b = [o for o in first if o not in mine] or first, [o for o in mine if o not in first] or mine
                raise ConfigError(f"hydra.sweep.subdir: the jobs '{' '.join(a) or '(no overrides)'}' and "
                                  f"'{' '.join(b) or '(no overrides)'}' both go to {folder}, where one would "
                                  f"overwrite the other; give each job its own folder (drop hydra.sweep.subdir=..., "
                                  f"or make it differ per job, e.g. with ${{hydra.job.num}})")
            owner[folder] = mine
            check_paths(typed, Path(folder), "hydra.sweep.dir")

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
            for f in sorted(sweep_dir.glob(f"*/{RUN_FILE}")):
                try:
                    self._existing.setdefault(read_run(f.parent, derive=False).get("config_hash"), f.parent.name)
                except (OSError, BadRecord):
                    self._existing.setdefault(f"unreadable:{f.parent.name}", f.parent.name)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.job.num = num
        default = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        folder = self._existing.get(key)
        if folder is None and (sweep_dir / default / RUN_FILE).is_file():
            folder = f"{default}_{key[:8]}"  # the default name holds another configuration (e.g. a grown grid)
        if folder is None or folder == default:
            return []
        if "'" in folder:
            log.warning("sweep: job %d: cannot point Hydra at folder %r (a quote in its name); using %s", num, folder,
                        default)
            return []
        log.info("sweep: job %d (%s) goes to %s", num, default, folder)
        return [f"hydra.sweep.subdir='{folder}'"]

    def sweep(self, arguments: List[str]) -> SweepOutcome:
        """Run the sweep (a grid, a two-stage selection or sequential seeds); its jobs' outcomes and summary."""
        if self.dry_run:
            return self._dry_run(arguments)
        self._start_progress()
        returns: Sequence[Sequence[Any]] = []
        try:
            seq = Sequential.parse(self.sequential, self.select)
            if seq is not None:
                returns = self._sequential(seq, arguments)
            elif self.select is None:
                returns = super().sweep(arguments)
            else:
                returns = self._two_stage(Selection.parse(self.select), arguments)
        finally:
            self._end_progress(sum(len(b) for b in returns))
        jobs = [r.return_value if isinstance(r.return_value, dict) else {"status": "done"}
                for batch in returns for r in batch]
        n_bad = sum(1 for r in jobs if r.get("status") != "done")
        n_skip = sum(1 for r in jobs if r.get("skipped"))
        log.info("sweep finished: %d done (%d of them skipped: done before), %d not done", len(jobs) - n_bad,
                 n_skip, n_bad)
        return SweepOutcome(jobs=jobs, summary=self._write_summary(jobs))

    def _dry_run(self, arguments: List[str]) -> SweepOutcome:
        """Each job, validated and placed in its folder as for a real sweep, with what it would do there
        (:func:`harness.dry_run.describe`); nothing is launched or written. A two-stage sweep lists its stage-1
        jobs and the plan of stage 2 (:meth:`_stage2_plan`)."""
        assert self.config is not None and self.hydra_context is not None
        if self.select is None:
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            batches = self.split_arguments(parser.parse_overrides(self._parse_config() + list(arguments)), None)
            return SweepOutcome(dry_rows=self._describe(batches, 0))
        sel = Selection.parse(self.select)
        grid, points = self._stage1(sel, arguments)
        self._needs_validation = True
        rows = self._describe(self._prepare(grid, None), 0, show=sel.key)
        return SweepOutcome(dry_rows=rows, stage2=self._stage2_plan(sel, points, rows))

    def _describe(self, batches: List[List[List[str]]], first_num: int,
                  show: Optional[str] = None) -> list[dict[str, str]]:
        """:func:`harness.dry_run.describe` of each job of ``batches`` (numbered from ``first_num``) in the
        folder a real sweep would give it; ``show``: a config key whose value follows the run's name."""
        from harness.dry_run import describe
        from harness.tracking import run_name

        assert self.config is not None and self.hydra_context is not None
        rows = []
        for num, job in enumerate((j for batch in batches for j in batch), start=first_num):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.job.num = num
            folder = Path(str(cfg.hydra.sweep.dir)) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            plain = OmegaConf.to_container(cfg, resolve=False)
            assert isinstance(plain, dict)
            plain.pop("hydra", None)
            shown = f" {show}={OmegaConf.select(cfg, show)}" if show else ""
            rows.append(describe(plain, folder, name=run_name(plain) + shown, key="hydra.sweep.dir"))
        return rows

    def _stage2_plan(self, sel: Selection, points: dict[tuple[str, ...], list[list[str]]],
                     stage1: list[dict[str, str]]) -> Stage2Plan:
        """What stage 2 will run, as far as it can be known now: for a grid point whose stage-1 jobs are all
        ``skip (done)`` the choice is made now, by the rule of the real sweep, and its stage-2 jobs are listed
        (folders and actions as :meth:`_describe`; numbered as the real sweep numbers them when every grid
        point gets a choice); the other points' choices wait for stage 1."""
        from harness.dry_run import Stage2Plan

        assert self.config is not None
        labels = self._point_labels(points)
        by_hash = self._runs_by_hash()
        action = {r["folder"]: r["action"] for r in stage1}
        plan = Stage2Plan(key=sel.key, values=sel.values, seeds=sel.seeds, metric=SELECT_METRICS[sel.metric],
                          points=list(labels.values()))
        jobs: list[list[str]] = []
        known: set[tuple[str, ...]] = set()
        for point, candidates in points.items():
            folders = [by_hash.get(self._hashes.get(tuple(job), "")) for job in candidates]
            if all(f is not None and action.get(str(f)) == "skip (done)" for f in folders):
                value = self._choose(sel, candidates, by_hash)["chosen"]
                plan.chosen[labels[point]] = value
                if value is None:
                    continue  # no candidate scored: the real sweep runs no stage 2 for this point
                mine = [[*point, f"{sel.key}={value!r}", f"seed={s}"] for s in sel.seeds]
                known.update(map(tuple, mine))
            else:  # not chosen yet: any value holds its place (only the later jobs' numbers depend on it)
                mine = [[*point, f"{sel.key}={sel.values[0]!r}", f"seed={s}"] for s in sel.seeds]
            jobs += mine
        if known:
            width = len(next(iter(known)))
            batches = self._prepare(jobs, None, first_num=len(stage1))
            rows = self._describe(batches, len(stage1), show=sel.key)
            kept = [j for b in batches for j in b]
            plan.rows = [r for r, job in zip(rows, kept) if tuple(job[:width]) in known]
        return plan

    def _start_progress(self) -> None:
        """The sweep's bar (off with train.progress=false); jobs of the basic launcher advance it as they end."""
        assert self.config is not None and self._task is not None
        enabled = bool(OmegaConf.select(self.config, "train.progress", default=True))
        self._progress = summaries.SweepProgress(enabled, in_process=isinstance(self.launcher, BasicLauncher))
        self._task.progress = self._progress

    def _end_progress(self, finished: int) -> None:
        if self._progress is not None:
            self._progress.close(finished)
        if self._task is not None:
            self._task.progress = None
        self._progress = None

    def _write_summary(self, jobs: list[dict[str, Any]]) -> str:
        """<sweep>/summary.md and summary.csv from the ``jobs``' outcomes; the Markdown text ("" when writing
        failed: that is logged, the sweep's results stand)."""
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            text = summaries.write_sweep_summary(sweep_dir, jobs)
        except OSError as e:
            log.error("sweep summary not written to %s: %s", sweep_dir, e)
            return ""
        log.info("summary written to %s and %s", sweep_dir / summaries.SUMMARY_MD, sweep_dir / summaries.SUMMARY_CSV)
        return text

    # -- two-stage selection --------------------------------------------------------------------------------

    def _launch(self, batches: List[List[List[str]]], first_num: int) -> list[Any]:
        """Launch ``batches`` as BasicSweeper.sweep does (legality check, then the launcher), job numbers from
        ``first_num``; the launchers' results, batch by batch."""
        assert self.launcher is not None
        returns: list[Any] = []
        num = first_num
        for batch in batches:
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=num)
            for r in results:
                _ = r.return_value  # raises when a job failed in a way the app did not catch
            num += len(batch)
            returns.append(results)
        return returns

    def _runs_by_hash(self) -> dict[str, Path]:
        """Config hash -> run folder, for every run.json in the sweep dir."""
        assert self.config is not None
        out: dict[str, Path] = {}
        for f in sorted(Path(str(self.config.hydra.sweep.dir)).glob(f"*/{RUN_FILE}")):
            try:
                out.setdefault(read_run(f.parent, derive=False).get("config_hash"), f.parent)
            except (OSError, BadRecord) as e:
                log.warning("%s; that run is left out of the selection", e)
        return out

    def _stage1(self, sel: Selection,
                arguments: List[str]) -> tuple[list[list[str]], dict[tuple[str, ...], list[list[str]]]]:
        """Stage 1's jobs (the grid × ``sel.values`` at seed ``sel.seeds[0]``) and, per grid point (its
        overrides without the selected key and the seed), its jobs; ConfigError when an override sets either."""
        assert self.config is not None and self.hydra_context is not None
        given = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for o in parser.parse_overrides(given):
            if o.key_or_group in (sel.key, "seed"):
                raise ConfigError(f"{o.key_or_group}: set by hydra.sweeper.select ({sel.key} over {sel.values}, seeds "
                                  f"{sel.seeds}); change hydra.sweeper.select.values / .seeds instead")
        values = ",".join(repr(v) for v in sel.values)
        grid = BasicSweeper.split_arguments(
            parser.parse_overrides([*given, f"{sel.key}={values}", f"seed={sel.seeds[0]}"]), None)[0]
        points: dict[tuple[str, ...], list[list[str]]] = {}
        for job in grid:
            points.setdefault(tuple(o for o in job if not o.startswith((f"{sel.key}=", "seed="))), []).append(job)
        return grid, points

    def _point_labels(self, points: dict[tuple[str, ...], list[list[str]]]) -> dict[tuple[str, ...], str]:
        """Each grid point's label: the overrides that tell the points apart (and the swept params)."""
        values_of: dict[str, set[str]] = {}
        for point in points:
            for o in point:
                values_of.setdefault(o.split("=", 1)[0], set()).add(o)
        shown = {k for k, v in values_of.items() if len(v) > 1 or k in self.params}
        return {point: " ".join(o for o in point if o.split("=", 1)[0] in shown) or "(the grid's one point)"
                for point in points}

    def _choose(self, sel: Selection, jobs: list[list[str]], by_hash: dict[str, Path]) -> dict[str, Any]:
        """One grid point's choice from its stage-1 ``jobs`` (their runs found in ``by_hash``): ``candidates``
        (value, score, status, config_hash, run_dir), ``chosen`` (None when no candidate finished with a finite
        validation score), ``main_metric`` and ``at_grid_edge`` where known."""
        from harness import metrics as metric_fns

        entry: dict[str, Any] = {"candidates": [], "chosen": None}
        best: Optional[tuple[float, float]] = None
        for job in jobs:
            value = float(next(o for o in job if o.startswith(f"{sel.key}=")).split("=", 1)[1])
            h = self._hashes.get(tuple(job))
            run_dir = by_hash.get(h) if h else None
            cand: dict[str, Any] = {"value": value, "score": None, "status": "missing", "config_hash": h,
                                    "run_dir": str(run_dir) if run_dir else None}
            entry["candidates"].append(cand)
            if run_dir is None:
                continue
            try:
                cand["status"] = read_run(run_dir).get("status")
                summary = read_summary(run_dir) if cand["status"] == "done" else {}
            except (OSError, BadRecord) as e:
                log.warning("%s; not a candidate", e)
                summary = {}
            main = summary.get("main_metric")
            score = summary.get(SELECT_METRICS[sel.metric].format(main)) if main else None
            if score is None or not math.isfinite(score):
                continue  # failed (e.g. diverged at a high lr) or no validation: not a candidate
            cand["score"] = score
            entry["main_metric"] = main
            m = metric_fns.METRICS.get(main)
            signed = score if m is None or m.higher_is_better else -score
            if best is None or signed > best[0]:
                best = (signed, value)
        if best is not None:
            tried = [c["value"] for c in entry["candidates"]]
            entry["chosen"] = best[1]
            entry["at_grid_edge"] = len(tried) > 1 and best[1] in (min(tried), max(tried))
        return entry

    @staticmethod
    def _beyond(values: list[float], chosen: float) -> float:
        """The next value past ``chosen``, an edge of ``values`` (≥ 2 of them): the edge times its ratio to the
        neighbour when all are positive (a geometric grid: 4 → 8 after 2, 4), else the edge plus their gap."""
        v = sorted(values)
        edge, near = (v[-1], v[-2]) if chosen == v[-1] else (v[0], v[1])
        return edge * (edge / near) if v[0] > 0 else edge + (edge - near)

    def _extend(self, sel: Selection, points: dict[tuple[str, ...], list[list[str]]],
                next_num: int) -> tuple[list[Any], int]:
        """Grow the grid of every point whose choice sits at an edge of its values, one value a round, up to
        ``sel.extend`` values a side; the new jobs join ``points``. The launchers' results and the next number."""
        returns: list[Any] = []
        added: dict[tuple[str, ...], int] = {}
        for _ in range(2 * sel.extend):
            by_hash = self._runs_by_hash()
            new: list[list[str]] = []
            for point, jobs in points.items():
                entry = self._choose(sel, jobs, by_hash)
                if not entry.get("at_grid_edge") or added.get(point, 0) >= 2 * sel.extend:
                    continue
                tried = [c["value"] for c in entry["candidates"]]
                value = self._beyond(tried, entry["chosen"])
                side = "up" if entry["chosen"] == max(tried) else "down"
                if sum(1 for v in tried if v not in sel.values and (v > max(sel.values)) == (side == "up")) >= sel.extend:
                    continue
                job = [*point, f"{sel.key}={value!r}", f"seed={sel.seeds[0]}"]
                log.info("selection: %s=%s chosen at the edge of %s; extending the grid with %s", sel.key,
                         entry["chosen"], sorted(tried), value)
                jobs.append(job)
                added[point] = added.get(point, 0) + 1
                new.append(job)
            if not new:
                break
            batches = self._prepare(new, self.max_batch_size, first_num=next_num)
            returns += self._launch(batches, next_num)
            next_num += sum(len(b) for b in batches)
        return returns, next_num

    def _two_stage(self, sel: Selection, arguments: List[str]) -> list[Any]:
        """Stage 1: the grid × ``sel.values`` at seed ``sel.seeds[0]``; choose per grid point on validation;
        stage 2: the chosen value × ``sel.seeds``. Writes ``selection.json`` after each stage."""
        assert self.config is not None and self.hydra_context is not None
        grid, points = self._stage1(sel, arguments)
        self._needs_validation = True
        batches = self._prepare(grid, self.max_batch_size)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("selection, stage 1: %d grid points x %s=%s at seed %d (%d jobs)", len(points), sel.key,
                 sel.values, sel.seeds[0], sum(len(b) for b in batches))
        returns = self._launch(batches, 0)
        more, next_num = self._extend(sel, points, sum(len(b) for b in batches))
        returns += more

        by_hash = self._runs_by_hash()
        record: dict[str, Any] = {"key": sel.key, "values": sel.values, "seeds": sel.seeds, "metric": sel.metric,
                                  "extend": sel.extend,
                                  "stage1_seed": sel.seeds[0], "rule": "best stage-1 score of the main metric on "
                                  "validation; ties: the value listed first", "created": time.time(), "points": []}
        stage2: list[list[str]] = []
        for (point, jobs), label in zip(points.items(), self._point_labels(points).values()):
            entry = {"point": label, "overrides": list(point), **self._choose(sel, jobs, by_hash)}
            record["points"].append(entry)
            chosen = entry["chosen"]
            if chosen is None:
                log.error("selection: %s: no candidate finished with a validation score; stage 2 skipped", label)
                continue
            if entry["at_grid_edge"]:
                log.warning("selection: %s: chosen %s=%s is still at the edge of the values tried %s (extended by "
                            "at most %d a side: hydra.sweeper.select.extend)", label, sel.key, chosen,
                            sorted(c["value"] for c in entry["candidates"]), sel.extend)
            log.info("selection: %s: %s=%s (%s: %s)", label, sel.key, chosen,
                     sel.metric, ", ".join(f"{c['value']}: {c['score']}" for c in entry["candidates"]))
            entry["stage2"] = [[*point, f"{sel.key}={chosen!r}", f"seed={s}"] for s in sel.seeds]
            stage2 += entry["stage2"]
        write_json_atomic(sweep_dir / SELECTION_FILE, record)
        log.info("selection written to %s", sweep_dir / SELECTION_FILE)
        if stage2:
            batches = self._prepare(stage2, self.max_batch_size, first_num=next_num)
            log.info("selection, stage 2: %d jobs (chosen value x seeds %s)", sum(len(b) for b in batches), sel.seeds)
            returns += self._launch(batches, next_num)
            by_hash = self._runs_by_hash()
            for entry in record["points"]:
                entry["stage2"] = [{"overrides": job, "config_hash": self._hashes.get(tuple(job)),
                                    "run_dir": str(by_hash.get(self._hashes.get(tuple(job)), "")) or None}
                                   for job in entry.get("stage2", [])]
            write_json_atomic(sweep_dir / SELECTION_FILE, record)
        return returns

    # -- sequential seeds -------------------------------------------------------------------------------------

    def _sequential(self, seq: Sequential, arguments: List[str]) -> list[Any]:
        """The grid at seeds 0..batch−1, then ``batch`` more seeds at a time until every contrast is decided
        (:func:`analysis.seeds.sequential_look`) or ``max_seeds`` is reached; each look into ``sequential.json``
        (verdicts, and per contrast [difference, low, high] of the printed interval)."""
        from analysis import sequential as seq_stats
        from analysis.seeds import sequential_look

        assert self.config is not None and self.hydra_context is not None
        given = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if any(o.key_or_group == "seed" for o in parser.parse_overrides(given)):
            raise ConfigError("seed: set by hydra.sweeper.sequential (seeds 0.. in batches); drop the seed override")
        looks = seq_stats.planned_looks(seq.batch, seq.max_seeds)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        record: dict[str, Any] = {"batch": seq.batch, "max_seeds": seq.max_seeds, "margin": seq.margin,
                                  "looks": list(looks), "boundary": seq_stats.boundary(looks).describe(),
                                  "done": []}
        returns: list[Any] = []
        num, start = 0, 0
        for n in looks:
            seeds = ",".join(str(s) for s in range(start, n))
            batches = self._prepare(BasicSweeper.split_arguments(parser.parse_overrides([*given, f"seed={seeds}"]),
                                                                 None)[0], self.max_batch_size, first_num=num)
            returns += self._launch(batches, num)
            num, start = num + sum(len(b) for b in batches), n
            cons = sequential_look([str(sweep_dir)], looks=looks, margin=seq.margin)
            open_ = seq_stats.undecided(cons["verdict"])
            keys = cons["task"] + ": " + cons["contrast"]
            record["done"].append({"seeds": n, "undecided": [cons["contrast"].iloc[i] for i in open_],
                                   "verdicts": dict(zip(keys, cons["verdict"])),
                                   "intervals": {k: [float(v), float(lo), float(hi)] for k, v, lo, hi in
                                                 zip(keys, cons["difference"], cons["low"], cons["high"])}})
            write_json_atomic(sweep_dir / SEQUENTIAL_FILE, json_safe(record))
            log.info("sequential: %d seeds: %d of %d contrasts undecided", n, len(open_), len(cons))
            if not open_ and len(cons):
                break
        return returns
