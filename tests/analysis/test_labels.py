"""Analysis knows only records: no method name in its code; labels, order and budget letters come from what
the runs recorded (declared by each method's file), with a label for a method nobody has described."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from analysis.labels import method_display, method_label, method_order_key

ROOT = Path(__file__).resolve().parents[2]
#: the registry names of the harness's methods (harness/methods/): none may appear in analysis code
METHOD_NAMES = {"full", "lora", "dora", "adalora", "pissa", "vera"}


def method_literals(source: str, path: str) -> list[str]:
    """``path:line 'name'`` of every string constant of ``source`` that is a method name as a whole."""
    return [f"{path}:{n.lineno} {n.value!r}" for n in ast.walk(ast.parse(source, path))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in METHOD_NAMES]


def test_analysis_code_names_no_method() -> None:
    found = [hit for f in sorted((ROOT / "analysis").rglob("*.py"))
             for hit in method_literals(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], "method names belong to the records (or claims/*.yaml):\n" + "\n".join(found)


def test_the_scan_sees_whole_strings_only() -> None:
    src = 'a = "lora"\nb = f"dora_{x}"\nc = "LoRA"\nd = {"vera": 1}\n'
    assert method_literals(src, "m.py") == ["m.py:1 'lora'", "m.py:4 'vera'"]


def test_display_is_what_the_runs_recorded() -> None:
    rows = pd.DataFrame({"method": ["mine", "mine"], "method_label": ["Mine", None], "method_budget_symbol": [None, "k"],
                         "method_order": [5, 5]})
    shown = method_display("mine", rows)
    assert shown["method_label"] == "Mine" and shown["method_budget_symbol"] == "k" and shown["method_order"] == 5
    assert method_label("mine", 8, "fast", rows=rows) == "Mine k=8 (fast)"
    assert method_label("mine", 8, label="Given") == "Given r=8"  # an explicit label wins; default letter
    assert method_order_key("mine", rows) == (5, "mine")


def test_a_method_never_seen_gets_a_label_and_sorts_after_the_known() -> None:
    shown = method_display("brand_new")
    assert shown["method_label"] == "brand_new" and shown["method_budget_symbol"] == "r"
    assert shown["method_baseline"] is False and shown["method_color"] is None  # a figure's palette colours it
    assert sorted(["brand_new", "adalora", "full"], key=method_order_key) == ["full", "adalora", "brand_new"]
