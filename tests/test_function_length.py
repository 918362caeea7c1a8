"""No function in harness/ or analysis/ is longer than 80 lines (a long function is two or more jobs: split
it). Lines from ``def`` (decorators excluded) to the function's last line, docstring included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "analysis")
MAX_LINES = 80


def long_functions(source: str, path: str, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function or method of ``source`` over ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if n > limit:
                out.append(f"{path}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_over_80_lines() -> None:
    found = [hit for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))
             for hit in long_functions(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], "split these functions:\n" + "\n".join(found)


def test_the_count_is_from_def_to_the_last_line() -> None:
    body = "\n".join(f"    x = {i}" for i in range(79))
    assert long_functions(f"@deco\ndef f():\n{body}\n", "m.py") == []  # 80 lines
    assert long_functions(f"class C:\n    def g(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
                          f"        y = 1\n", "m.py") == ["m.py:2 g (81 lines)"]
