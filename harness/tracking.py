"""Metric sinks: the local ``metrics.jsonl`` (the source of truth) and W&B (offline by default).

A tracking failure never kills a run: W&B errors give one warning and W&B is switched off.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Protocol

from harness.config import TrackingConfig
from harness.run_record import write_text_atomic

log = logging.getLogger(__name__)


class MetricLogger(Protocol):
    """What the loop talks to."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def close(self, exit_code: int = 0) -> None: ...


class NullLogger:
    """Discards everything (processes other than rank 0)."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
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

    def close(self, exit_code: int = 0) -> None:
        self._f.close()


class WandbLogger:
    """A W&B run in the run folder (``mode=offline`` needs no account); errors disable it with a warning."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, *, name: str, group: Optional[str],
                 job_type: str, config: dict[str, Any], run_id: Optional[str] = None) -> None:
        """``run_id``: the W&B id of an earlier attempt of this run (a resumed run continues that W&B run)."""
        self.run: Any = None
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group or group, job_type=job_type,
                name=name, config=config, dir=str(run_dir), mode=cfg.mode, tags=list(cfg.tags) or None,
                reinit="finish_previous", id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(init_timeout=cfg.init_timeout),
            )
        except Exception as e:  # noqa: BLE001 - tracking must never kill a run
            self._disable("start", e)

    @property
    def run_id(self) -> Optional[str]:
        """The W&B run id (None when W&B is off or failed)."""
        return getattr(self.run, "id", None) if self.run is not None else None

    def _disable(self, what: str, e: Exception) -> None:
        first = " ".join(str(e).split())[:300]
        log.warning("wandb failed to %s (%s: %s); continuing with local records only (metrics.jsonl)", what,
                    type(e).__name__, first)
        self.run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as e:  # noqa: BLE001
                self._disable("log", e)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.summary.update({k: v for k, v in values.items() if isinstance(v, (int, float, str))})
            except Exception as e:  # noqa: BLE001
                self._disable("write the summary", e)

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

    def close(self, exit_code: int = 0) -> None:
        for s in self.sinks:
            s.close(exit_code)
