"""The conf/ folder: where it is, its config groups and their options, and the experiment presets (read from
the files; no Hydra, no harness import: the CLI, the dry run and ``harness.eval`` share it)."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"


def presets() -> dict[str, str]:
    """Experiment presets (bare words) and the first comment line of each."""
    out = {}
    for f in sorted((CONF / "experiment").glob("*.yaml")):
        lines = [ln[1:].strip() for ln in f.read_text().splitlines() if ln.startswith("#") and "@package" not in ln]
        out[f.stem] = lines[0] if lines else ""
    return out


def groups() -> dict[str, list[str]]:
    """Config groups under conf/ and their options (not the folders that belong to one option, such as a
    preset's own method configs in ``experiment/<preset>/``)."""
    out: dict[str, list[str]] = {}
    for d in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        rel = d.relative_to(CONF)
        if any((CONF / part.parent / f"{part.name}.yaml").is_file() for part in (rel, *rel.parents[:-1])):
            continue
        opts = sorted(f.stem for f in d.glob("*.yaml"))
        if opts:
            out[str(rel)] = opts
    return out
