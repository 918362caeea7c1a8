"""What a run and a sweep say when they end, and quiet library output while they run (docs/output.md).

* :func:`configure_output`: called at the start of every run. transformers' per-load chatter ("The following
  layers were not sharded", the "Loading weights" bar) and PEFT's warning about zero-sized LoRA tensors (an
  AdaLoRA matrix pruned to rank 0; the end block explains it) are silenced unless ``train.verbose=true``; log
  lines on the console go through ``tqdm.write``, so progress bars stay whole.
* :func:`run_block`: the block the CLI prints after a run.
* :func:`write_sweep_summary`: the table of a sweep's jobs, the best configuration per task and the next
  commands, written to ``<sweep>/summary.md`` and ``summary.csv``; the CLI prints it.
* :class:`SweepProgress`: one bar over a sweep's jobs.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from harness.record import (DONE, ERROR_FILE, FAILED, RUN_FILE, RUNNING, SELECTION_FILE, BadRecord, read_config,
                            read_json, read_run, read_summary, recorded_budget, write_text_atomic)

log = logging.getLogger(__name__)

SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
ZERO_RANK_NOTE = "rank 0: AdaLoRA pruned every singular triplet of the matrix, so its update is zero"
#: PEFT's save-time warning about 1-D or zero-sized lora_A/lora_B; in this harness (no ZeRO-3 / FSDP shards) it
#: only fires for AdaLoRA matrices pruned to rank 0
_PEFT_INVALID_SHAPE = r"Adapter '.*': \d+ LoRA tensor\(s\) have invalid shape"


# -- quiet output -------------------------------------------------------------------------------------------


class TqdmHandler(logging.StreamHandler):
    """A console handler writing through ``tqdm.write``: a log line never breaks a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


def tqdm_console_logging() -> None:
    """Replace the root logger's console handlers (stdout/stderr) by :class:`TqdmHandler`s with the same
    stream, level, format and filters (the secret-masking filter stays)."""
    root = logging.getLogger()
    for i, h in enumerate(root.handlers):
        if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr):
            new = TqdmHandler(h.stream)
            new.setLevel(h.level)
            new.setFormatter(h.formatter)
            new.filters = list(h.filters)
            root.handlers[i] = new


def configure_output(verbose: bool) -> None:
    """Quiet transformers (warnings and errors only, no weight-loading bar) and PEFT's rank-0 warning, unless
    ``verbose``; console log lines through tqdm."""
    from transformers.utils import logging as hf_logging

    if verbose:
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        warnings.filterwarnings("default", message=_PEFT_INVALID_SHAPE)
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message=_PEFT_INVALID_SHAPE)
    tqdm_console_logging()


# -- one run ------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the sweep ({} when missing or unusable: these summaries are for reading)."""
    try:
        data = read_json(path)
        return data if isinstance(data, dict) else {}
    except (OSError, BadRecord):
        return {}


def _read(reader: Any, run_dir: Path) -> dict[str, Any]:
    """``reader(run_dir)`` (a validated record of harness.record); {} and one warning line for a bad one."""
    try:
        return reader(run_dir)
    except FileNotFoundError:
        return {}
    except (OSError, BadRecord) as e:
        log.warning("%s; left out of the sweep summary", e)
        return {}


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def best_note(summary: dict[str, Any]) -> str:
    """What ``best/<metric>`` is in this summary."""
    if summary.get("best_selected_on") == "validation":
        return f"dev at step {summary.get('best_step')}, the step best on validation"
    return f"best on dev (no validation split), step {summary.get('best_step')}"


def run_block(result: dict[str, Any]) -> str:
    """The lines printed after a run: status, folder, metrics, adapter, speed, parameters (and AdaLoRA's
    rank-0 matrices); for a failed run the reason and error.txt."""
    run_dir = Path(str(result.get("run_dir")))
    status = str(result.get("status"))
    rows: list[tuple[str, str]] = []
    if status != "done":
        rows += [("status", status), ("folder", str(run_dir)), ("reason", str(result.get("error")))]
        if (run_dir / ERROR_FILE).is_file():
            rows.append(("traceback", str(run_dir / ERROR_FILE)))
        return _block(rows)
    s = _read(read_summary, run_dir)
    main = s.get("main_metric", "metric")
    done = "done before, skipped (train.force=true runs it again)" if result.get("skipped") else "done"
    rows += [("status", done), ("folder", str(run_dir)),
             (str(main), f"final dev {_num(s.get('main_metric_value'))} (step {s.get('steps')})")]
    if s.get(f"valid/{main}") is not None:
        rows.append(("", f"final validation {_num(s.get(f'valid/{main}'))}"))
    if s.get(f"best/{main}") is not None:
        rows.append(("", f"best {_num(s.get(f'best/{main}'))} ({best_note(s)})"))
    saved = run_dir / str(s.get("save_dir") or "")
    if s.get("save_dir") and saved.is_dir():
        rows.append(("saved", str(saved)))
    tps = s.get("tokens_per_s")
    rows.append(("train time", f"{_duration(s.get('train_seconds'))}" + (f", {tps:,.0f} tokens/s" if tps else "")))
    rows.append(("parameters", f"{s.get('trainable_params', 0):,} trained, {s.get('effective_params', 0):,} effective"))
    zero = s.get("adalora/zero_rank_matrices")
    if zero is not None:
        rows.append(("rank 0", f"{zero} of {s.get('adapted_matrices')} matrices ({ZERO_RANK_NOTE})"))
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    if offline:
        rows += [("W&B", f"{offline[-1]} (offline)"), ("", f"wandb sync {offline[-1]}")]
    return _block(rows)


def _block(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(["--- run " + "-" * 52, *(f"{k:<{width}}  {v}" for k, v in rows)])


# -- a sweep ------------------------------------------------------------------------------------------------


def _status(result: dict[str, Any], record: dict[str, Any]) -> str:
    status = str(result.get("status"))
    if status == "done":
        return "skipped: done before" if result.get("skipped") else "done"
    if record.get("status") == RUNNING:
        return "skipped: running"  # another process holds the run (its run.json says running)
    return status


def _stage_of(sweep_dir: Path) -> dict[str, str]:
    """Run folder -> ``1: candidate`` / ``1+2: chosen`` (the chosen candidate, also stage 2's first seed) / ``2``,
    from the compare preset's selection.json."""
    sel = _read_json(sweep_dir / SELECTION_FILE)
    out: dict[str, str] = {}
    for point in sel.get("points", []):
        for c in point.get("candidates", []):
            if c.get("run_dir"):
                out[c["run_dir"]] = "1+2: chosen" if c.get("value") == point.get("chosen") else "1: candidate"
        for job in point.get("stage2", []):
            if isinstance(job, dict) and job.get("run_dir"):
                out.setdefault(job["run_dir"], "2")
    return out


def sweep_rows(sweep_dir: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per job of the sweep, from the jobs' results and their folders' records."""
    stages = _stage_of(sweep_dir)
    rows = []
    for i, r in enumerate(results):
        run_dir = Path(str(r.get("run_dir")))
        record = _read(lambda d: read_run(d, derive=False), run_dir)
        s = _read(read_summary, run_dir) if r.get("status") == DONE else {}
        cfg = record.get("config") or (_read(read_config, run_dir) if record else {})
        main = s.get("main_metric")
        rows.append({
            "job": i, "method": s.get("method") or cfg.get("method", {}).get("name"), "budget": recorded_budget(record),
            "task": s.get("task") or cfg.get("task", {}).get("name"), "seed": s.get("seed", cfg.get("seed")),
            "lr_scale": s.get("lr_scale", cfg.get("train", {}).get("lr_scale")),
            "stage": stages.get(str(run_dir), ""), "status": _status(r, record), "main_metric": main,
            "final": s.get("main_metric_value"), "best": s.get(f"best/{main}") if main else None,
            "valid": s.get(f"valid/{main}") if main else None,
            "best_selected_on": s.get("best_selected_on"), "seconds": s.get("wall_seconds"),
            "tokens_per_s": s.get("tokens_per_s"), "trainable_params": s.get("trainable_params"),
            "folder": run_dir.name, "error": r.get("error") or "",
        })
    return rows


def best_per_task(rows: list[dict[str, Any]]) -> list[str]:
    """Per task, the best configurations (method, budget, lr_scale): chosen on the validation split when every
    run has a validation score (``valid/<main>``), else on the final dev value — the reported set, said so as
    not a fair selection. A set, not one winner: every configuration whose 95% t-interval over seeds (kept inside
    a bounded metric's range) overlaps the top one's (:func:`analysis.stats.top_group`); with one seed per configuration only the top is named,
    as descriptive. Stage-1 selection candidates are left out."""
    from analysis import stats
    from harness import metrics as metric_fns

    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        runs = [r for r in rows if r["task"] == task and r["final"] is not None and r["stage"] != "1: candidate"]
        if not runs:
            out.append(f"- {task}: no finished run")
            continue
        on_valid = all(r.get("valid") is not None for r in runs)
        key = "valid" if on_valid else "final"
        how = "on the validation split" if on_valid else "on the reported dev set — not a fair selection"
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in runs:
            groups.setdefault((r["method"], r["budget"], r["lr_scale"]), []).append(r)
        m = metric_fns.METRICS.get(runs[0]["main_metric"])
        higher = m is None or m.higher_is_better
        bounds = metric_fns.metric_range(str(runs[0]["main_metric"]))
        names, ivs = list(groups), [stats.interval([r[key] for r in g], bounds=bounds) for g in groups.values()]
        top = stats.top_group([iv.mean for iv in ivs], [iv.low for iv in ivs], [iv.high for iv in ivs],
                              higher_is_better=higher)
        order = sorted(range(len(names)), key=lambda i: -ivs[i].mean if higher else ivs[i].mean)
        if not top.any():
            picked, note = [order[0]], "one seed: no interval, descriptive"
        else:
            picked, note = [i for i in order if top[i]], "every configuration whose interval overlaps the top one's"
        cells = []
        for i in picked:
            method, budget, lr_scale = names[i]
            label = f"{method}" + ("" if budget is None else f" budget {budget}") + \
                ("" if lr_scale in (None, 1.0) else f" lr_scale {lr_scale}")
            dev = stats.t_interval([r["final"] for r in groups[names[i]]]).mean
            cells.append(f"{label} ({key} {ivs[i].mean:.4f}" + (f", dev {dev:.4f}" if on_valid else "") + ")")
        gap = (f"; validation − dev gap {sum(r['valid'] - r['final'] for r in runs) / len(runs):+.4f} over "
               f"{len(runs)} runs" if on_valid else "")
        out.append(f"- {task}: " + "; ".join(cells) + f" — chosen {how}; {note}; {runs[0]['main_metric']}, "
                   f"mean over {min(iv.n for iv in ivs)}–{max(iv.n for iv in ivs)} seeds{gap}")
    return out


def _table(rows: list[dict[str, Any]], with_stage: bool, with_lr: bool) -> list[str]:
    head = ["#", "method", "budget", "task", "seed", *(["lr_scale"] if with_lr else []),
            *(["stage"] if with_stage else []), "status", "metric", "final", "best", "time", "folder"]
    body = [[str(r["job"]), str(r["method"]), "-" if r["budget"] is None else str(r["budget"]), str(r["task"]),
             str(r["seed"]),
             *([str(r["lr_scale"])] if with_lr else []), *([r["stage"] or "-"] if with_stage else []), r["status"],
             r["main_metric"] or "-", _num(r["final"]), _num(r["best"]), _duration(r["seconds"]), r["folder"]]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(fmt(b) for b in body)]


def write_overview(sweep_dir: Path) -> Optional[Path]:
    """The sweep's one-page figure, ``<sweep>/summary.png`` (:func:`analysis.overview.write_overview`; None when
    no run finished). A figure that cannot be drawn is one warning line: it never fails the sweep."""
    from analysis.overview import write_overview as draw

    try:
        return draw(sweep_dir)
    except Exception as e:  # noqa: BLE001 - a figure is a convenience; the sweep's results stand without it
        log.warning("%s: no summary figure (%s: %s)", sweep_dir, type(e).__name__, e)
        return None


def sweep_summary(sweep_dir: Path, rows: list[dict[str, Any]], figure: Optional[Path] = None) -> str:
    """The Markdown text: table, failures, selection stages, best configuration per task, the figure (when
    ``figure`` was written), next commands."""
    with_stage = any(r["stage"] for r in rows)
    with_lr = len({r["lr_scale"] for r in rows}) > 1
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs: " + ", ".join(f"{n} {k}" for k, n in counts.items()),
             "", *_table(rows, with_stage, with_lr)]
    bad = [r for r in rows if r["error"]]
    if bad:
        lines += ["", "Not done:"]
        lines += [f"- job {r['job']} ({r['folder']}): {r['status']}: {r['error']}"
                  + (f"; traceback in {sweep_dir / r['folder'] / ERROR_FILE}"
                     if (sweep_dir / r["folder"] / ERROR_FILE).is_file() else "") for r in bad]
    if with_stage:
        lines += ["", "Two-stage selection (selection.json): rows of stage '1: candidate' and '1+2: chosen' are the "
                  "stage-1 selection candidates (first seed, each value, scored on validation); stage 2 runs the "
                  "chosen value with every seed. The best configuration below uses stage-2 runs only."]
    lines += ["", "Best configurations per task (a set where intervals over seeds overlap):", *best_per_task(rows)]
    if figure is not None:
        lines += ["", f"Figure: {figure} (metric per configuration with its interval over seeds, parameters "
                      f"trained, train time)"]
    lines += ["", "Next:", "",
              f"    python -m analysis table {sweep_dir}",
              f"    python -m analysis report {sweep_dir} -o {sweep_dir}/report"]
    if any(sweep_dir.glob("*/wandb/offline-run-*")):
        lines.append(f"    wandb sync {sweep_dir}/*/wandb/offline-run-*")
    return "\n".join(lines) + "\n"


def write_sweep_summary(sweep_dir: Path, results: list[dict[str, Any]]) -> str:
    """Write ``summary.md``, ``summary.csv`` and the one-page figure ``summary.png`` (:func:`write_overview`)
    into ``sweep_dir``; returns the Markdown text."""
    rows = sweep_rows(sweep_dir, results)
    figure = write_overview(sweep_dir)
    text = sweep_summary(sweep_dir, rows, figure)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["job"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(sweep_dir / SUMMARY_MD, text)
    write_text_atomic(sweep_dir / SUMMARY_CSV, buf.getvalue())
    return text


class SweepProgress:
    """One bar over a sweep's jobs (done / total, ETA). Jobs run in this process (the basic launcher) advance
    it as each ends (:class:`CountingTask`); for launchers running jobs in other processes a thread counts the
    run folders whose run.json turned done or failed since the sweep started (jobs skipped as done before
    only show at the end)."""

    def __init__(self, enabled: bool, in_process: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc="sweep", unit="job", disable=not enabled, dynamic_ncols=True, position=0)
        self.in_process = in_process
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        tqdm_console_logging()

    def add(self, n: int, sweep_dir: Path) -> None:
        """``n`` more jobs (a later selection stage adds its own); starts polling ``sweep_dir`` when needed."""
        self.bar.total += n
        self.bar.refresh()
        if not self.in_process and self._thread is None and not self.bar.disable:
            self._thread = threading.Thread(target=self._poll, args=(sweep_dir,), daemon=True)
            self._thread.start()

    def job_done(self) -> None:
        """One job ended in this process."""
        self.bar.update(1)

    def _poll(self, sweep_dir: Path) -> None:
        while not self._stop.wait(2.0):
            n = 0
            for run_dir in (p for p in sweep_dir.iterdir() if p.is_dir()):
                try:
                    if (run_dir / RUN_FILE).stat().st_mtime >= self.started and \
                            read_run(run_dir, derive=False).get("status") in (DONE, FAILED):
                        n += 1
                except (OSError, BadRecord):
                    continue
            if n > self.bar.n:
                self.bar.update(min(n, self.bar.total) - self.bar.n)

    def close(self, finished: int) -> None:
        """The sweep ended with ``finished`` jobs."""
        self._stop.set()
        if finished > self.bar.n:
            self.bar.update(finished - self.bar.n)
        self.bar.close()


class CountingTask:
    """A sweep's task function that advances its bar (:attr:`progress`, set while the sweep runs) as each job
    run in this process ends. Sent to worker processes (pickled), it drops the bar: there the bar polls the
    run folders instead."""

    def __init__(self, task: Callable[[Any], Any]) -> None:
        self.task = task
        self.progress: Optional[SweepProgress] = None

    def __call__(self, cfg: Any) -> Any:
        try:
            return self.task(cfg)
        finally:
            if self.progress is not None:
                self.progress.job_done()

    def __getstate__(self) -> dict[str, Any]:
        return {"task": self.task, "progress": None}
