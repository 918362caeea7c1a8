"""analysis reads run folders; it imports nothing from harness' training side and never talks to W&B itself."""

from __future__ import annotations

import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"
#: Modules analysis must not import (function-level imports included): the training side, and W&B.
FORBIDDEN = ("harness.loop", "harness.run", "harness.methods", "wandb")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from … import`` names anywhere in the file (relative imports resolved
    against the analysis package)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "analysis" + (f".{base}" if base else "")
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def forbidden(module: str) -> bool:
    """``harness.run`` and below are forbidden, ``harness.run_record`` is not."""
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from harness.methods.adalora import RANKS_FILE\n    import wandb\n"
                 "    from harness import run_record\n")
    bad = {m for m in imported_modules(f) if forbidden(m)}
    assert bad == {"harness.methods.adalora", "harness.methods.adalora.RANKS_FILE", "wandb"}


def test_analysis_imports_no_training_side_and_no_wandb() -> None:
    files = sorted(ANALYSIS.rglob("*.py"))
    assert len(files) > 10
    bad = {}
    for f in files:
        mods = {m for m in imported_modules(f) if forbidden(m)}
        if mods:
            bad[f.relative_to(ANALYSIS).as_posix()] = sorted(mods)
    assert bad == {}


def test_no_import_cycle_in_analysis() -> None:
    """Module-level and function-level imports between analysis modules form no cycle."""
    graph: dict[str, set[str]] = {}
    names = {".".join(f.relative_to(ANALYSIS.parent).with_suffix("").parts).removesuffix(".__init__")
             for f in ANALYSIS.rglob("*.py")}
    for f in ANALYSIS.rglob("*.py"):
        me = ".".join(f.relative_to(ANALYSIS.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[me] = {m for m in imported_modules(f) if m in names and m != me and m != "analysis"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
