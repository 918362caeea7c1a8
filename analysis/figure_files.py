"""What the figure commands share: each figure saved as PNG + PDF + the CSV of the data it draws, and the
setup of the runs (task, model, the harness's method label and colour) read from their records."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.record import BadRecord, read_run, read_summary

log = logging.getLogger(__name__)

#: Run-level fields a figure uses for its title and styling (``method_label`` / ``method_color`` are
#: written by the harness into run.json or summary.json; older runs lack them).
SETUP_FIELDS = ("task", "model", "method_label", "method_color")


def save_figure(fig: Any, out: Path, stem: str, data: pd.DataFrame) -> list[Path]:
    """Write ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv`` (``data``: what the figure draws) into
    ``out``, close the figure, and return the three paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf", out / f"{stem}.csv"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    data.to_csv(paths[2], index=False)
    return paths


def run_setup(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder: ``run_dir`` and :data:`SETUP_FIELDS` from its run.json (summary.json for the
    method's label and colour when run.json lacks them); a field nobody wrote is left out, an unreadable
    record gives an empty row (the figure then omits what it cannot know)."""
    rows = []
    for d in dict.fromkeys(map(str, run_dirs)):
        row: dict[str, Any] = {"run_dir": d}
        for reader in (lambda r: read_run(r, derive=False), read_summary):
            try:
                rec = reader(Path(d))
            except (OSError, BadRecord) as e:
                log.debug("%s: unreadable (%s)", d, e)
                continue
            for k in SETUP_FIELDS:
                if k not in row and isinstance(rec.get(k), str):
                    row[k] = rec.get(k)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_dir", *SETUP_FIELDS]).dropna(axis=1, how="all")


def with_setup(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with a ``run_dir`` column) joined with :func:`run_setup` where it lacks those columns."""
    if "run_dir" not in frame or frame.empty:
        return frame
    setup = run_setup(frame["run_dir"].unique())
    new = [c for c in setup.columns if c != "run_dir" and c not in frame]
    if not new:
        return frame
    return frame.merge(setup[["run_dir", *new]], on="run_dir", how="left")
