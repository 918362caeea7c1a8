"""docs/cli.md quotes `--help` outputs; each quoted block is the real program's output, run here (argparse
wraps at the terminal width: the blocks are made at COLUMNS=100)."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
#: console scripts as the doc spells them → the module they run
SCRIPTS = {"harness": ["-m", "harness"], "lora-analysis": ["-m", "analysis"]}
#: the helps the page must quote (a block dropped from the page fails here, not silently)
REQUIRED = ("harness --help", "harness --help method=adalora", "python -m analysis --help",
            "python -m harness.eval --help")


def quoted_helps(text: str) -> dict[str, str]:
    """``$ <command> …--help…`` fenced blocks of the page: command → the output quoted under it."""
    out = {}
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("$ ") and "--help" in first:
            out[first[2:].strip()] = rest.rstrip("\n")
    return out


def argv(command: str) -> list[str]:
    """The command as this interpreter runs it (``harness`` → ``python -m harness``)."""
    words = shlex.split(command)
    if words[0] in SCRIPTS:
        return [sys.executable, *SCRIPTS[words[0]], *words[1:]]
    assert words[:2] == ["python", "-m"], f"docs/cli.md: cannot run '{command}'"
    return [sys.executable, *words[1:]]


def test_the_page_quotes_every_main_help() -> None:
    assert set(REQUIRED) <= set(quoted_helps(DOC.read_text()))


def in_process(args: list[str]) -> int:
    """``python -m MODULE ARGS`` (as :func:`argv` spells it) through MODULE's ``main`` in this process: what
    ``python -m`` runs (``sys.exit(main())``), without a fresh interpreter's imports (seconds each)."""
    assert args[0] == sys.executable and args[1] == "-m", args
    module = importlib.import_module(args[2] if args[2].count(".") else f"{args[2]}.__main__")
    try:
        return module.main(args[3:])
    except SystemExit as e:  # argparse's --help
        return e.code if isinstance(e.code, int) else 1


@pytest.mark.parametrize("command", sorted(quoted_helps(DOC.read_text())))
def test_quoted_help_is_the_real_help(command: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    rc = in_process(argv(command))
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    assert quoted_helps(DOC.read_text())[command] == out.rstrip("\n"), (
        f"docs/cli.md quotes a stale '{command}'; replace its block with:\n{out}")


def test_the_help_of_a_real_process() -> None:
    """One help through a fresh ``python -m`` (the others run in process): the program's own output."""
    command = "python -m harness.eval --help"
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(argv(command), capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert quoted_helps(DOC.read_text())[command] == r.stdout.rstrip("\n")
