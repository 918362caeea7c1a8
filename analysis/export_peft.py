"""``python -m analysis export-peft RUNS… -o DIR``: each harness run as a PEFT ``method_comparison`` result.

Successful runs go to ``DIR/results/``, failed and cancelled ones to ``DIR/cancelled_results/`` (PEFT keeps
them apart the same way), one JSON file per run named like PEFT's (``<method>--<model>-<setting>--<time>.json``),
so PEFT's dashboard (``method_comparison/app.py``) and ``python -m analysis table DIR/results`` read them.
The files are strict JSON: a NaN or infinite number (a metric of constant predictions, a diverged loss) is
written as ``null``. A run whose record is damaged is skipped with one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from analysis.load import find_runs
from analysis.outputs import check_folder
from analysis.peft_format import peft_result, result_filename, result_subdir
from harness.record import BadRecord, json_safe

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``export-peft``."""
    p.add_argument("runs", nargs="+", help="run folders or sweep folders")
    p.add_argument("-o", "--output", default="outputs/peft_results",
                   help="folder that receives results/ and cancelled_results/ (default: outputs/peft_results)")
    p.add_argument("--only-done", action="store_true", help="skip runs that are not done instead of exporting them apart")


def main(args: argparse.Namespace) -> int:
    """Export every run folder found; 1 when there was none."""
    out = check_folder(Path(args.output), "-o/--output")
    run_dirs = find_runs(args.runs)
    if not run_dirs:
        print("error: no run folders (with run.json) found", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for rd in run_dirs:
        try:
            res = peft_result(rd)
        except BadRecord as e:
            print(f"skipped {rd}: {e}", file=sys.stderr)
            continue
        except (OSError, ValueError, KeyError) as e:
            print(f"skipped {rd}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        sub = result_subdir(res)
        if sub != "results" and args.only_done:
            continue
        path = out / sub / result_filename(res)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(res), indent=2, allow_nan=False) + "\n")
        counts[sub] = counts.get(sub, 0) + 1
    for sub, n in sorted(counts.items()):
        print(f"{n} file(s) in {out / sub}")
    return 0
