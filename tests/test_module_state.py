"""No hidden channels: no ``global`` statement and no module-level list, dict or set mutated after import in
harness/ or analysis/ (a value passes through return values, not module state). Registries that decorators
fill at import are the exception, listed in :data:`IMPORT_TIME_REGISTRIES` (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "analysis")
#: filled once, at import, by the decorators that register a method, its config schema, a problem type
IMPORT_TIME_REGISTRIES = {("harness/methods/__init__.py", "METHODS"), ("harness/problems/__init__.py", "PROBLEMS"),
                          ("harness/config.py", "METHOD_SCHEMAS")}
MUTATORS = {"append", "extend", "insert", "remove", "pop", "clear", "update", "setdefault", "add", "discard",
            "popitem", "sort", "reverse", "__setitem__", "__delitem__"}
CONTAINERS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def files() -> dict[str, ast.Module]:
    return {str(f.relative_to(ROOT)): ast.parse(f.read_text(), str(f))
            for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def module_containers(tree: ast.Module) -> set[str]:
    """Names bound at module level to a list, dict or set (a literal, a comprehension or list()/dict()/set())."""
    out = set()
    for node in tree.body:
        targets, value = ((node.targets, node.value) if isinstance(node, ast.Assign) else
                          ([node.target], node.value) if isinstance(node, ast.AnnAssign) and node.value else ([], None))
        is_container = isinstance(value, CONTAINERS) or (isinstance(value, ast.Call) and isinstance(
            value.func, ast.Name) and value.func.id in ("list", "dict", "set", "defaultdict", "OrderedDict"))
        out |= {t.id for t in targets if isinstance(t, ast.Name) and is_container}
    return out


def _target(node: ast.AST) -> ast.AST | None:
    """The container expression a statement or call mutates, if any."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
        return node.func.value
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        for t in getattr(node, "targets", None) or [getattr(node, "target", None)]:
            if isinstance(t, ast.Subscript):
                return t.value
            if isinstance(node, ast.AugAssign):
                return t
    return None


def mutations(trees: dict[str, ast.Module]) -> list[str]:
    """``file:line NAME`` of every mutation (in a function) of a module-level container of any module,
    through its own name or ``module.NAME``; plus every ``global`` statement."""
    owned = {name: path for path, tree in trees.items() for name in module_containers(tree)}
    found = []
    for path, tree in trees.items():
        mine = module_containers(tree)
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            local = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            local |= {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
            for node in ast.walk(fn):
                if isinstance(node, ast.Global):
                    found.append(f"{path}:{node.lineno} global {', '.join(node.names)}")
                t = _target(node)
                if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Slice):
                    t = t.value  # X[:] = ...
                name = t.id if isinstance(t, ast.Name) and t.id in mine and t.id not in local else \
                    t.attr if isinstance(t, ast.Attribute) and t.attr in owned and t.attr.isupper() else None
                if name and (owned.get(name, path) if isinstance(t, ast.Attribute) else path, name) \
                        not in IMPORT_TIME_REGISTRIES:
                    found.append(f"{path}:{node.lineno} {name}")
    return found


def test_no_module_state_mutated_at_run_time() -> None:
    assert mutations(files()) == []


def test_the_scan_finds_what_it_looks_for() -> None:
    src = ("JOBS: list = []\nSEEN = set()\nOK = {'a': 1}\n"
           "def f(x):\n    JOBS.append(x)\n    SEEN.add(x)\n    print(OK['a'])\n"
           "def g():\n    global N\n    other.RESULTS[:] = []\n    JOBS[0] = 1\n"
           "def h(JOBS):\n    JOBS.append(1)\n")
    trees = {"harness/x.py": ast.parse(src), "harness/other.py": ast.parse("RESULTS = []\n")}
    assert mutations(trees) == ["harness/x.py:5 JOBS", "harness/x.py:6 SEEN", "harness/x.py:9 global N",
                                "harness/x.py:10 RESULTS", "harness/x.py:11 JOBS"]
