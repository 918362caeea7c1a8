"""Metric sinks: the local ``metrics.jsonl`` (the source of truth) and W&B (offline by default).

A tracking failure never kills a run: W&B errors give one warning and W&B is switched off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

from harness.config import TrackingConfig
from harness.metrics import METRICS
from harness.record import write_text_atomic

log = logging.getLogger(__name__)


class MetricLogger(Protocol):
    """What the loop talks to."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def log_model(self, folder: Path) -> None: ...

    def close(self, exit_code: int = 0) -> None: ...


class NullLogger:
    """Discards everything (processes other than rank 0)."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_model(self, folder: Path) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (a resumed run logs the later ones again); a torn
    last line is dropped. Rewritten atomically. Returns the number of rows dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    write_text_atomic(path, "".join(kept))
    return dropped


class JsonlLogger:
    """One JSON line per logged step in ``metrics.jsonl``, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")
        self._f.flush()

    def sync(self) -> None:
        """Force the rows written so far to disk (before a checkpoint that claims them)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def log_model(self, folder: Path) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        self._f.close()


#: history keys of the per-matrix snapshot summaries (``snapshot/<matrix label>/<stat>``): W&B gets them as one
#: table per checkpoint plus their mean over matrices, not a curve each
_SNAPSHOT_KEY = re.compile(r"^snapshot/(?P<label>[^/]+)/(?P<stat>[^/]+)$")


def run_name(cfg: Mapping[str, Any]) -> str:
    """A short run name, ``<method>-b<budget>-<task>-s<seed>`` (e.g. ``<method>-b8-sst2-s0``), from a composed config
    (as Hydra composes it, interpolations unresolved). The budget appears only when the method's config uses
    it (``${budget}`` somewhere in ``method``); a method that ignores the budget is named without it."""
    method = cfg.get("method") or {}
    budget = cfg.get("budget")
    uses_budget = budget is not None and "${budget}" in json.dumps(method, default=str)
    parts = [str(method.get("name", "run")), *([f"b{budget}"] if uses_budget else []),
             str((cfg.get("task") or {}).get("name", "task")), f"s{cfg.get('seed', 0)}"]
    return "-".join(parts)


def summary_table(value: Any) -> Optional[tuple[list[str], list[list[Any]]]]:
    """(columns, rows) of a non-scalar summary value, or None for a scalar: a list of dicts → a row per item
    (columns: their keys), a dict → (key, value) rows, a list of lists → columns c0, c1, …, a list → one column
    ``value``. Cells that are not scalars are written as JSON; a column mixing numbers, strings and booleans is
    written as text (a W&B column holds one type)."""

    def cell(v: Any) -> Any:
        return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)

    if isinstance(value, Mapping):
        cols, rows = ["key", "value"], [[str(k), cell(v)] for k, v in value.items()]
    elif not isinstance(value, (list, tuple)):
        return None
    elif value and all(isinstance(v, Mapping) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        cols, rows = [str(c) for c in keys], [[cell(v.get(c)) for c in keys] for v in value]
    elif value and all(isinstance(v, (list, tuple)) for v in value):
        width = max(len(v) for v in value)
        cols = [f"c{i}" for i in range(width)]
        rows = [[cell(v[i]) if i < len(v) else None for i in range(width)] for v in value]
    else:
        cols, rows = ["value"], [[cell(v)] for v in value]
    kind = lambda v: "bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "num"  # noqa: E731
    for j in range(len(cols)):
        if len({kind(r[j]) for r in rows if r[j] is not None}) > 1:
            for r in rows:
                r[j] = None if r[j] is None else r[j] if isinstance(r[j], str) else json.dumps(r[j])
    return cols, rows


class WandbLogger:
    """A W&B run in the run folder (``mode=offline`` needs no account); errors disable it with a warning.

    What W&B gets (``metrics.jsonl`` keeps everything): a ``step`` axis for every metric; eval/valid metrics
    with a best-of summary (max or min by the metric's direction); per-matrix snapshot summaries as one
    ``snapshot/matrices`` table per checkpoint plus ``snapshot/mean/<stat>`` curves; non-scalar summary
    values as tables; the adapter (or model) folder as a ``model`` artifact with the run's config.
    """

    def __init__(self, cfg: TrackingConfig, run_dir: Path, *, name: str, group: Optional[str],
                 job_type: str, config: dict[str, Any], run_id: Optional[str] = None,
                 tags: Sequence[str] = ()) -> None:
        """``run_id``: the W&B id of an earlier attempt of this run (a resumed run continues that W&B run);
        ``tags``: besides ``cfg.tags`` (e.g. task, model, preset)."""
        self.run: Any = None
        self.error: Optional[str] = None  # why W&B stopped (run.json ``wandb.error`` when it never started)
        self.config = config
        self._defined: set[str] = set()
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb
            all_tags = list(dict.fromkeys(t for t in (*tags, *cfg.tags) if t))
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group or group, job_type=job_type,
                name=name, config=config, dir=str(run_dir), mode=cfg.mode, tags=all_tags or None,
                reinit="finish_previous", id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(init_timeout=cfg.init_timeout),
            )
            self.run.define_metric("step")
            self.run.define_metric("*", step_metric="step")
        except Exception as e:  # noqa: BLE001 - tracking must never kill a run
            self._disable("start", e)

    @property
    def run_id(self) -> Optional[str]:
        """The W&B run id (None when W&B is off or failed)."""
        return getattr(self.run, "id", None) if self.run is not None else None

    def _disable(self, what: str, e: Exception) -> None:
        first = " ".join(str(e).split())[:300]
        self.error = f"failed to {what}: {type(e).__name__}: {first}"
        log.warning("wandb %s; continuing with local records only (metrics.jsonl; run.json notes it)", self.error)
        self.run = None

    def _define(self, key: str) -> None:
        """``eval/<metric>`` and ``valid/<metric>``: summary = the best value (max or min by the metric's
        direction) and the last one."""
        self._defined.add(key)
        section, _, metric = key.partition("/")
        if section in ("eval", "valid") and metric in METRICS:
            best = "max" if METRICS[metric].higher_is_better else "min"
            self.run.define_metric(key, summary=f"{best},last")

    def _wandb_row(self, metrics: dict[str, float]) -> dict[str, Any]:
        """What W&B logs of one metrics row: snapshot summaries folded into a table and their means."""
        row: dict[str, Any] = {}
        per_matrix: dict[str, dict[str, float]] = {}
        for k, v in metrics.items():
            m = _SNAPSHOT_KEY.match(k)
            if m:
                per_matrix.setdefault(m["label"], {})[m["stat"]] = v
            else:
                row[k] = v
        if per_matrix:
            stats = list(dict.fromkeys(s for d in per_matrix.values() for s in d))
            rows = []
            for label, d in per_matrix.items():
                kind, _, rest = label.partition(".")
                layer = rest.split(".")[0]
                rows.append([label, kind, int(layer) if layer.isdigit() else None, *(d.get(s) for s in stats)])
            row["snapshot/matrices"] = self._wandb.Table(columns=["matrix", "type", "layer", *stats], data=rows)
            for s in stats:
                vals = [d[s] for d in per_matrix.values() if s in d and not math.isnan(d[s])]
                if vals:
                    row[f"snapshot/mean/{s}"] = sum(vals) / len(vals)
        return row

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            try:
                row = self._wandb_row(metrics)
                for k in row.keys() - self._defined:
                    self._define(k)
                self.run.log({"step": step, **row}, step=step)
            except Exception as e:  # noqa: BLE001
                self._disable("log", e)

    def summary(self, values: dict[str, Any]) -> None:
        """Scalars as they are (keys also logged as history keep W&B's own summary: the last value, or best and
        last for eval/valid metrics), non-scalar values as tables."""
        if self.run is not None:
            try:
                for k, v in values.items():
                    if isinstance(v, (bool, int, float, str)):
                        if k not in self._defined:
                            self.run.summary[k] = v
                        continue
                    table = summary_table(v)
                    if table is not None:
                        self.run.summary[k] = self._wandb.Table(columns=table[0], data=table[1])
            except Exception as e:  # noqa: BLE001
                self._disable("write the summary", e)

    def log_model(self, folder: Path) -> None:
        """The saved adapter (or full model) folder as an artifact of type ``model``, the config as metadata."""
        if self.run is not None:
            try:
                art = self._wandb.Artifact(f"model-{self.run.id}", type="model", metadata=self.config,
                                           description=f"{folder.name}/ of run {self.run.name}")
                art.add_dir(str(folder), policy="immutable")  # no staging copy: a finished run's folder stays
                self.run.log_artifact(art)
            except Exception as e:  # noqa: BLE001
                self._disable("log the model artifact", e)

    def close(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                self._disable("finish", e)


class MultiLogger:
    """Fan out to several sinks."""

    def __init__(self, sinks: list[MetricLogger]) -> None:
        self.sinks = sinks

    def log(self, metrics: dict[str, float], step: int) -> None:
        for s in self.sinks:
            s.log(metrics, step)

    def summary(self, values: dict[str, Any]) -> None:
        for s in self.sinks:
            s.summary(values)

    def log_model(self, folder: Path) -> None:
        for s in self.sinks:
            s.log_model(folder)

    def close(self, exit_code: int = 0) -> None:
        for s in self.sinks:
            s.close(exit_code)


# ------------------------------------------------------------------------------ analysis outputs to W&B

#: files logged as images (other files are saved into the W&B run as they are)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


def analysis_run_id(folder: Path, name: str, *, project: str, group: Optional[str]) -> str:
    """The W&B id of the analysis run ``name``: the same for every call on the same sweep group (or, without
    a group, the same output folder), so later calls add to that run instead of starting another."""
    key = f"{project}/{group if group else Path(folder).resolve()}/{name}"
    return "analysis-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def publish(folder: Path, *, name: str, files: Mapping[str, Path] | None = None,
            tables: Mapping[str, Any] | None = None, mode: str = "offline", project: str = "lora-harness",
            entity: Optional[str] = None, group: Optional[str] = None, config: Optional[dict[str, Any]] = None,
            artifact_type: Optional[str] = None) -> Optional[str]:
    """Log analysis outputs into the W&B run ``name`` (``job_type=analysis``) of the sweep's ``group``, its
    files in ``folder/wandb/`` (offline by default; ``wandb sync`` uploads them).

    ``files``: key → path; images are logged as images, HTML pages as HTML, anything else saved into the run.
    ``tables``: key → DataFrame, logged as W&B tables (and, with ``artifact_type``, also kept as an artifact of
    that type named after the run). The run id is :func:`analysis_run_id` with ``resume="allow"``: a later
    call continues the same run. Returns the W&B run folder, or None after one warning (never raises).
    """
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        folder.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, entity=entity, group=group, job_type="analysis", name=name,
                         id=analysis_run_id(folder, name, project=project, group=group), resume="allow",
                         mode=mode, dir=str(folder), config=config or {}, reinit="finish_previous")
        payload: dict[str, Any] = {}
        for key, path in (files or {}).items():
            path = Path(path)
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                payload[key] = wandb.Image(str(path))
            elif path.suffix.lower() in (".html", ".htm"):
                payload[key] = wandb.Html(path.read_text(encoding="utf-8"))
            else:
                run.save(str(path), base_path=str(path.parent), policy="now")
        logged_tables = {key: wandb.Table(dataframe=df) for key, df in (tables or {}).items()}
        payload.update(logged_tables)
        if payload:
            run.log(payload)
        if artifact_type and logged_tables:
            art = wandb.Artifact(re.sub(r"[^A-Za-z0-9._-]+", "-", name), type=artifact_type,
                                 description=f"tables of the analysis run {name}")
            for key, table in logged_tables.items():
                art.add(table, key.replace("/", "_"))
            run.log_artifact(art)
        where = str(run.dir)
        run.finish()
        wandb.teardown()  # flush and stop W&B's service: finish alone may leave the offline file unwritten
        log.info("logged %s to W&B (%s, group %s): %s", name, mode, group, where)
        return where
    except Exception as e:  # noqa: BLE001 - W&B never fails an analysis
        log.warning("could not log %s to W&B (%s: %s); the files are written anyway", name, type(e).__name__,
                    " ".join(str(e).split())[:300])
        return None
