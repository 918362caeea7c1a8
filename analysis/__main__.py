"""Command line: ``python -m analysis {figures dora|figures adalora|figures spectra|figures forgetting|table|seeds|report|export-peft|runs|diff} …``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from typing import NoReturn


def _figure(module: str, help_text: str) -> tuple[tuple[str, ...], str, str]:
    """A figure's command: ``figures <name>`` runs the module ``analysis.figures_<name>``."""
    return ("figures", module.rpartition("figures_")[2]), module, help_text


# (command words, module, help)
COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    _figure("analysis.figures_dora", "DoRA ΔM vs ΔD figure"),
    _figure("analysis.figures_adalora", "AdaLoRA rank heatmaps"),
    _figure("analysis.figures_spectra", "weight analysis: intruders, ranks, spectra, similarity"),
    _figure("analysis.figures_forgetting", "learned score vs forgetting, per configuration (decoder runs)"),
    (("table",), "analysis.table", "compare methods: mean ± interval over seeds (Markdown, LaTeX, CSV)"),
    (("seeds",), "analysis.seeds", "seeds each contrast needs to be decided at a margin, from a pilot's variance"),
    (("report",), "analysis.report", "one self-contained HTML report: setup, runs, tables with verdicts, figures, environment"),
    (("export-peft",), "analysis.export_peft", "write each run as a PEFT method_comparison result file"),
    (("runs",), "analysis.runs", "a row per run: status, steps, method, task, budget, seed, main metric, age"),
    (("diff",), "analysis.diff", "what differs between two runs: configuration keys and summary metrics"),
)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``error:`` line (BadOption), not a usage screen."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        from analysis.table import BadOption

        raise BadOption(f"{message} ({self.prog} --help lists the options)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of all registered subcommands."""
    parser = OneLineParser(prog="python -m analysis", description="Figures, tables and reports from run folders.")
    sub = parser.add_subparsers(dest="command", required=True)
    nested: dict[str, argparse._SubParsersAction] = {}
    for words, module, help_text in COMMANDS:
        if len(words) == 1:
            p = sub.add_parser(words[0], help=help_text)
        else:
            if words[0] not in nested:
                grp = sub.add_parser(words[0], help=f"{words[0]}: " + ", ".join(w[1] for w, _, _ in COMMANDS if w[0] == words[0]))
                nested[words[0]] = grp.add_subparsers(dest="kind", required=True)
            p = nested[words[0]].add_parser(words[1], help=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    from analysis.compare import DuplicateRunError, SelectionError
    from analysis.table import BadOption

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except BadOption as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.command_line = "python -m analysis " + shlex.join(argv)
    import matplotlib

    matplotlib.use("Agg")  # the commands only write files: never open a window, with or without a display

    # log to this call's stderr, and only during it (the command may run in-process, e.g. under pytest)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        return int(args._main(args) or 0)
    except (FileNotFoundError, BadOption, DuplicateRunError, SelectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
