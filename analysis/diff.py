"""``python -m analysis diff RUN_A RUN_B``: what differs between two runs — every configuration key (from
run.json) and every scalar of summary.json (with B − A for numbers); keys held by one run only are shown with
``-`` on the other side."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from analysis.table import BadOption
from harness.record import RUN_FILE, BadRecord, has_run, read_run, read_summary

_MISSING = object()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``diff``."""
    p.add_argument("run_a", help="a run folder (holding run.json)")
    p.add_argument("run_b", help="another run folder")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b.c`` keys (lists stay values)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every key whose values differ (a missing key: ``_MISSING``)."""
    return [(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(a.keys() | b.keys())
            if not _same(a.get(k, _MISSING), b.get(k, _MISSING))]


def _show(v: Any) -> str:
    if v is _MISSING:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if isinstance(v, (list, dict)) or v is None else str(v)


def _read(run: str, reader: Any, option: str) -> dict[str, Any]:
    """``reader(run)`` (a validated record of harness.record); BadOption naming the option and the damage."""
    if not has_run(Path(run)):
        raise BadOption(f"{option}: {run} is not a run folder (no {RUN_FILE}); pass a folder such as "
                        f"outputs/runs/<run> or outputs/multirun/<sweep>/<job>")
    try:
        return reader(Path(run))
    except FileNotFoundError:
        return {}
    except (OSError, BadRecord) as e:
        raise BadOption(f"{option}: {e.path if isinstance(e, BadRecord) else e.filename} is unreadable ({e})") \
            from None


def diff_text(run_a: str, run_b: str) -> str:
    """The two sections (configuration, metrics) as aligned text."""
    rec_a, rec_b = _read(run_a, read_run, "RUN_A"), _read(run_b, read_run, "RUN_B")
    sum_a, sum_b = _read(run_a, read_summary, "RUN_A"), _read(run_b, read_summary, "RUN_B")
    cfg = differences(flatten(rec_a.get("config", {})), flatten(rec_b.get("config", {})))
    scalar = (bool, int, float, str, type(None))
    metrics = differences({k: v for k, v in sum_a.items() if isinstance(v, scalar)},
                          {k: v for k, v in sum_b.items() if isinstance(v, scalar)})
    lines = [f"A: {run_a} ({rec_a.get('status', '?')})", f"B: {run_b} ({rec_b.get('status', '?')})", ""]
    for title, rows, delta in (("configuration", cfg, False), ("metrics (summary.json)", metrics, True)):
        lines.append(f"{title}: {len(rows)} difference(s)" if rows else f"{title}: identical")
        if not rows:
            lines.append("")
            continue
        cells = []
        for k, a, b in rows:
            d = ""
            if delta and isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                d = f"{b - a:+.4g}"
            cells.append((k, _show(a), _show(b), d))
        head = ("key", "A", "B", "B - A" if delta else "")
        widths = [max(len(c[i]) for c in (head, *cells)) for i in range(3)]
        for c in (head, *cells):
            lines.append(("  " + "  ".join(f"{x:<{w}}" for x, w in zip(c[:3], widths)) + f"  {c[3]}").rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(args: argparse.Namespace) -> int:
    """Print the differences (exit 0 whether or not the runs differ)."""
    print(diff_text(args.run_a, args.run_b), end="")
    return 0
