"""The run folder's contract in one place: its file names, the schema of its records, atomic writing,
validated reading (with the migration of older layouts) and the meaning of a run's status.

Pure: no torch, no training code (``analysis`` reads run folders through this module). docs/reliability.md
lists what the harness promises about a run folder; docs/troubleshooting.md what each status means.

Status (``run.json`` ``status``): ``running`` → ``done`` | ``failed`` (with ``error``); ``replacing`` while an
earlier attempt's outputs are being removed (``train.force=true``, a re-run), before anything is deleted, so
an interruption leaves a folder that says it is not a finished run. Read back (:func:`read_run`): a
``running`` or ``replacing`` record whose process is gone reads as ``crashed``. Only ``done`` is a result
(:func:`is_result`); every reader (harness skip logic, eval, analysis) goes by that.

Reading validates every key it knows (type, range, finite numbers, a pid the OS can hold); a record that
fails raises :class:`BadRecord` naming the file and the key, which readers turn into one warning line and
leave that run out. Metric values may be NaN or infinite (a metric of constant predictions, a diverged
loss): they are numbers, read as floats, and written as ``null`` by :func:`json_safe` exports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from harness.redact import redact, redact_obj

# ---------------------------------------------------------------------------------------------------------
# file names (nowhere else in harness/ and analysis/)

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
ERROR_FILE = "error.txt"
MANIFEST_FILE = ".harness_manifest.json"
LOCK_FILE = ".lock"
#: a sweep folder's record of a two-stage selection (written by harness.sweeper, read by analysis and summaries)
SELECTION_FILE = "selection.json"
SEQUENTIAL_FILE = "sequential.json"  # a sequential sweep's looks (harness/sweeper.py), beside selection.json
#: the run's own record files (the rest of a run folder is its outputs: adapter/, snapshots/, checkpoints/ ...)
RECORD_FILES = (RUN_FILE, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, ERROR_FILE)

#: ``schema`` of run.json written now; records without the key are schema 1 (read as they are)
SCHEMA_VERSION = 2

RUNNING, DONE, FAILED, REPLACING = "running", "done", "failed", "replacing"
#: derived on reading: a running/replacing record whose process is gone; a folder without run.json
CRASHED, MISSING = "crashed", "missing"
WRITTEN_STATUSES = (RUNNING, DONE, FAILED, REPLACING)

#: the largest pid a record may hold (pid_t is a signed 32-bit integer); 0 and negative pids name process groups
PID_MAX = 2**31 - 1

# temporary names of our own writers (a killed writer leaves them; the next run reclaims them):
#: :func:`write_bytes_atomic` (``.<name>.tmp<pid>``), the save folder (``.<name>.tmp<pid>``, ``.<name>.old<pid>``),
#: a hard link (``.<name>.link<pid>``), a checkpoint being assembled (``.tmp_step_<n>.<pid>``)
_TEMP = re.compile(r"^\.(?:.+\.(?:tmp|old|link)|tmp_step_\d+\.)(?P<pid>\d+)$")


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """The temporary of ``path`` this process writes first (``kind`` tmp | old | link)."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}")


def temp_owner(name: str) -> Optional[int]:
    """The pid in one of our temporary names (:func:`temp_name`, a checkpoint's), else None."""
    m = _TEMP.match(name)
    return int(m["pid"]) if m else None


# ---------------------------------------------------------------------------------------------------------
# atomic writes


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file + fsync + rename, so a reader never sees half a file. A failed write
    (a full disk) leaves no temporary behind. A link at ``path`` is replaced, never written through."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text whose secret environment values are masked (harness.redact)."""
    write_bytes_atomic(path, redact(text).encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file + rename, so a reader never sees half a file."""
    write_text_atomic(path, json.dumps(redact_obj(obj), indent=2, default=str))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (what strict JSON readers accept), numpy
    scalars as Python numbers; for exports (``json.dumps(json_safe(x), allow_nan=False)``)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------------------------
# the schema


class BadRecord(ValueError):
    """A record that is not what the harness writes: ``path`` and ``key`` name where, the message why."""

    def __init__(self, path: Path, key: str, why: str) -> None:
        super().__init__(f"{path}: {key}: {why}")
        self.path, self.key, self.why = path, key, why


Check = Callable[[Any], Optional[str]]  # None: valid; else why not


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo: int, hi: Optional[int] = None) -> Check:
    """An integer in ``lo..hi`` (or null)."""
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            return f"must be an integer in {lo}..{hi if hi is not None else ''}, got {_shown(v)}"
        return None
    return check


def finite(lo: Optional[float] = None) -> Check:
    """A finite number ``>= lo`` (or null)."""
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        if not _number(v) or not math.isfinite(v) or (lo is not None and v < lo):
            return f"must be a finite number{f' >= {lo}' if lo is not None else ''}, got {_shown(v)}"
        return None
    return check


def metric(v: Any) -> Optional[str]:
    """A metric value: a number (NaN and infinities allowed: read as floats) or null."""
    return None if v is None or _number(v) else f"must be a number or null, got {_shown(v)}"


def kind(t: type, choices: tuple[Any, ...] = ()) -> Check:
    """A value of type ``t`` (or null), one of ``choices`` when given."""
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        if not isinstance(v, t) or (choices and v not in choices):
            want = f"one of {', '.join(map(str, choices))}" if choices else f"a JSON {_JSON_NAMES.get(t, t.__name__)}"
            return f"must be {want}, got {_shown(v)}"
        return None
    return check


def list_of(item: Check) -> Check:
    """A list whose items pass ``item`` (or null)."""
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        if not isinstance(v, list):
            return f"must be a JSON list, got {_shown(v)}"
        for i, x in enumerate(v):
            why = item(x)
            if why:
                return f"item {i} {why}"
        return None
    return check


_JSON_NAMES = {dict: "object", list: "list", str: "string", bool: "boolean"}


def _shown(v: Any) -> str:
    """A value in a message, cut short (a 5-million-digit number is not printed)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**30:
        return f"an integer of {len(str(abs(v))) if abs(v) < 10**4000 else 'over 4000'} digits"
    text = json.dumps(v, default=str) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def checked(check: Check, default: Any = None, factory: Optional[Callable[[], Any]] = None) -> Any:
    """A schema field: its default and the check its value must pass when read."""
    if factory is not None:
        return field(default_factory=factory, metadata={"check": check})
    return field(default=default, metadata={"check": check})


@dataclass
class RunFields:
    """``run.json`` (schema :data:`SCHEMA_VERSION`): the keys a reader may rely on, their types and ranges.
    Older records lack some keys (read as the defaults here); keys not listed are kept as recorded."""

    schema: int = checked(integer(1, SCHEMA_VERSION), 1)
    status: str = checked(kind(str, WRITTEN_STATUSES), RUNNING)
    error: Optional[str] = checked(kind(str))
    started: Optional[float] = checked(finite(0))
    restarted: Optional[float] = checked(finite(0))
    ended: Optional[float] = checked(finite(0))
    pid: Optional[int] = checked(integer(1, PID_MAX))
    host: Optional[str] = checked(kind(str))
    proc_start: Optional[str] = checked(kind(str))
    attempt: int = checked(integer(1), 1)
    attempts: list[dict[str, Any]] = checked(list_of(kind(dict)), factory=list)
    resumed_from: list[Optional[int]] = checked(list_of(integer(0)), factory=list)
    checkpoint: Optional[dict[str, Any]] = checked(kind(dict))
    name: Optional[str] = checked(kind(str))
    group: Optional[str] = checked(kind(str))
    method: Optional[str] = checked(kind(str))
    method_label: Optional[str] = checked(kind(str))
    method_color: Optional[str] = checked(kind(str))
    method_marker: Optional[str] = checked(kind(str))
    method_budget_symbol: Optional[str] = checked(kind(str))
    method_order: Optional[int] = checked(integer(0))
    method_baseline: Optional[bool] = checked(kind(bool))
    task: Optional[str] = checked(kind(str))
    model: Optional[str] = checked(kind(str))
    seed: Optional[int] = checked(integer(0))
    budget: Optional[int] = checked(integer(1))
    config_hash: Optional[str] = checked(kind(str))
    config: dict[str, Any] = checked(kind(dict), factory=dict)
    total_steps: Optional[int] = checked(integer(1))
    environment: dict[str, Any] = checked(kind(dict), factory=dict)
    git: Optional[dict[str, Any]] = checked(kind(dict))
    data_source: Optional[str] = checked(kind(str))
    data_split: Optional[dict[str, Any]] = checked(kind(dict))
    world_size: Optional[int] = checked(integer(1))
    lr: Optional[float] = checked(finite(0))
    save_dir: Optional[str] = checked(kind(str))
    wandb_id: Optional[str] = checked(kind(str))
    wandb: Optional[dict[str, Any]] = checked(kind(dict))


#: config groups a recorded config holds as objects (``config.<group>`` must be a JSON object when present)
CONFIG_GROUPS = ("method", "model", "task", "train", "tracking", "snapshot")


@dataclass
class SummaryFields:
    """``summary.json``: its identity and cost keys; every ``eval/``, ``valid/``, ``best/``, ``best_valid/``
    key is a metric (:func:`metric`)."""

    main_metric: Optional[str] = checked(kind(str))
    main_metric_value: Optional[float] = checked(metric)
    method: Optional[str] = checked(kind(str))
    task: Optional[str] = checked(kind(str))
    model: Optional[str] = checked(kind(str))
    seed: Optional[int] = checked(integer(0))
    budget: Optional[int] = checked(integer(1))
    steps: Optional[int] = checked(integer(0))
    best_step: Optional[int] = checked(integer(0))
    trainable_params: Optional[int] = checked(integer(0))
    effective_params: Optional[int] = checked(integer(0))
    tokens: Optional[int] = checked(integer(0))
    lr: Optional[float] = checked(finite(0))
    train_seconds: Optional[float] = checked(finite(0))
    wall_seconds: Optional[float] = checked(finite(0))
    tokens_per_s: Optional[float] = checked(metric)
    peak_memory_bytes: Optional[int] = checked(integer(0))


METRIC_PREFIXES = ("eval/", "valid/", "best/", "best_valid/")


def _validate(schema: type, data: dict[str, Any], path: Path) -> None:
    for f in dataclasses.fields(schema):
        if f.name in data:
            why = f.metadata["check"](data[f.name])
            if why:
                raise BadRecord(path, f.name, why)


def validate_run(data: Any, path: Path) -> dict[str, Any]:
    """``data`` (run.json's content) checked against :class:`RunFields`; BadRecord naming the key."""
    if not isinstance(data, dict):
        raise BadRecord(path, "(top level)", f"must be a JSON object, got a JSON {type(data).__name__}")
    _validate(RunFields, data, path)
    for group in CONFIG_GROUPS:
        node = data.get("config", {}).get(group)
        if node is not None and not isinstance(node, dict):
            raise BadRecord(path, f"config.{group}", f"must be a JSON object, got {_shown(node)}")
    name = data.get("config", {}).get("method", {}).get("name")
    if name is not None and not isinstance(name, str):
        raise BadRecord(path, "config.method.name", f"must be a string, got {_shown(name)}")
    return data


def validate_summary(data: Any, path: Path) -> dict[str, Any]:
    """``data`` (summary.json's content) checked against :class:`SummaryFields`; BadRecord naming the key."""
    if not isinstance(data, dict):
        raise BadRecord(path, "(top level)", f"must be a JSON object, got a JSON {type(data).__name__}")
    _validate(SummaryFields, data, path)
    for k, v in data.items():
        if k.startswith(METRIC_PREFIXES):
            why = metric(v)
            if why:
                raise BadRecord(path, k, why)
    return data


# ---------------------------------------------------------------------------------------------------------
# reading


def read_json(path: Path) -> Any:
    """A JSON file's content; BadRecord naming the file for what is not JSON (torn, not UTF-8, a number too
    long to read). OSError as raised (missing, unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise BadRecord(path, "(file)", f"not UTF-8 ({e.reason})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an int over Python's digit limit
        raise BadRecord(path, "(file)", f"not JSON ({' '.join(str(e).split())[:120]})") from None


def metrics_row(line: str) -> dict[str, Any]:
    """One line of metrics.jsonl: a JSON object with an integer ``step`` >= 0 (ValueError saying why not: not
    JSON, torn by a kill, a number too long to read, not an object, no step)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON (torn write?): {' '.join(str(e).split())[:80]}") from None
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    why = integer(0)(row.get("step", "missing"))
    if why:
        raise ValueError(f"step {why}")
    return row


def has_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run record (run.json)."""
    return (Path(run_dir) / RUN_FILE).is_file()


def find_run_files(root: Path) -> list[Path]:
    """Every run.json at or below ``root`` (symbolic links to folders are not followed)."""
    out = []
    for top, dirs, files in os.walk(root):
        if RUN_FILE in files:
            out.append(Path(top) / RUN_FILE)
        dirs.sort()
    return sorted(out)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A record of an older schema in the current layout: schema 1 (no ``schema`` key) lacks ``budget``,
    which :func:`recorded_budget` derives, and ``attempt`` (1)."""
    if data.get("schema", 1) < SCHEMA_VERSION:
        data = {**data}
        data.setdefault("attempt", 1)
        if "budget" not in data:
            data["budget"] = recorded_budget(data)
    return data


def read_run(run_dir: Path, *, derive: bool = True) -> dict[str, Any]:
    """The validated run.json of ``run_dir`` (``{"status": "missing"}`` without one), migrated to the current
    schema; with ``derive``, a ``running``/``replacing`` record whose process on this host is gone has status
    ``crashed``. BadRecord naming the file and key; OSError when the file cannot be read."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {"status": MISSING}
    data = migrate(validate_run(read_json(path), path))
    if derive and data.get("status") in (RUNNING, REPLACING) and not alive_here(data):
        data = {**data, "recorded_status": data["status"], "status": CRASHED,
                "error": data.get("error") or "the process ended without recording an end (killed or crashed)"}
    return data


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The validated summary.json of ``run_dir`` ({} without one); BadRecord naming the file and key."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    return validate_summary(read_json(path), path)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config: run.json's ``config``, else config.json (records that hold only that)."""
    rec = read_run(run_dir, derive=False)
    if rec.get("config"):
        return rec["config"]
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise BadRecord(path, "(top level)", f"must be a JSON object, got a JSON {type(cfg).__name__}")
    return cfg


# ---------------------------------------------------------------------------------------------------------
# how a method is shown: recorded by the run (its method file declares it), else as older records had it

#: the display keys a run records (run.json and summary.json), from its method file (harness/methods/base.py)
DISPLAY_KEYS = ("method_label", "method_color", "method_marker", "method_budget_symbol", "method_order",
                "method_baseline")
#: what a method's display is when nothing says otherwise: its name, no colour (a figure's palette gives one),
#: a circle, budgets as r=, after the methods with an order, not the baseline
DISPLAY_DEFAULTS: dict[str, Any] = {"method_color": None, "method_marker": "o", "method_budget_symbol": "r",
                                    "method_order": 100, "method_baseline": False}
#: records written before the methods recorded their display (and PEFT result files, which carry none): the
#: display of the harness's methods then, the saved folder, and the PEFT config that identifies the method
LEGACY_METHODS: dict[str, dict[str, Any]] = {
    "full": {"method_label": "Full FT", "method_color": "#444444", "method_marker": "s", "method_order": 0,
             "method_baseline": True, "save_dir": "model", "peft_type": None},
    "lora": {"method_label": "LoRA", "method_color": "#1f77b4", "method_marker": "o", "method_order": 1,
             "peft_type": "LORA", "use_dora": False},
    "dora": {"method_label": "DoRA", "method_color": "#ff7f0e", "method_marker": "D", "method_order": 2,
             "peft_type": "LORA", "use_dora": True},
    "adalora": {"method_label": "AdaLoRA", "method_color": "#2ca02c", "method_marker": "^",
                "method_budget_symbol": "b", "method_order": 3, "peft_type": "ADALORA"},
}


def method_display(method: Any, recorded: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The :data:`DISPLAY_KEYS` of a run of ``method``: what it recorded (``recorded``, a run.json or a row
    of one; missing or NaN values do not count), else :data:`LEGACY_METHODS`, else :data:`DISPLAY_DEFAULTS`
    with the name as label: a method nobody has seen gets a label, a marker and an order (its colour: the
    figure's palette)."""
    name = str(method)
    legacy = LEGACY_METHODS.get(name, {})
    out = {}
    for key in DISPLAY_KEYS:
        value = (recorded or {}).get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = legacy.get(key, DISPLAY_DEFAULTS.get(key, name))
        out[key] = value
    return out


def legacy_method(peft_type: Optional[str], use_dora: bool = False) -> Optional[str]:
    """The harness method of a PEFT config (:data:`LEGACY_METHODS`: no PEFT type = full fine-tuning); None when
    no method of the table has it."""
    for name, m in LEGACY_METHODS.items():
        if m.get("peft_type") == peft_type and bool(m.get("use_dora")) == bool(use_dora):
            return name
    return None


def is_result(record: dict[str, Any]) -> bool:
    """Whether a read record (:func:`read_run`) is a finished run whose outputs are results: ``done``."""
    return record.get("status") == DONE


def recorded_budget(record: dict[str, Any]) -> Optional[int]:
    """A run's budget (the LoRA rank it is matched with; None: a method without ranks) from its run.json:
    the ``budget`` written there since it was recorded; for older records, migrated as it was read before —
    the method's ``target_r``, else its ``r``, from the recorded config."""
    if "budget" in record:
        return record["budget"]
    method = (record.get("config") or {}).get("method") or {}
    for key in ("target_r", "r"):
        value = method.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# ---------------------------------------------------------------------------------------------------------
# processes


def proc_start(pid: int) -> Optional[str]:
    """Start time of a process (clock ticks after boot, from /proc), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, started: Optional[str] = None) -> bool:
    """Whether process ``pid`` (1..:data:`PID_MAX`; another value is no process) runs, and is the one that
    started at ``started`` when given. This process counts as gone (it reads its own earlier attempt)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= PID_MAX or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if started is not None:
        now = proc_start(pid)
        return now is None or now == started
    return True


def alive_here(record: dict[str, Any]) -> bool:
    """Whether the process a record names still runs: on another host it cannot be checked (True)."""
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return True
    pid = record.get("pid")
    return pid is not None and alive(pid, record.get("proc_start"))
