"""Command line: ``python -m harness [-m] [PRESET] [key=value ...]``.

A bare word selects the experiment preset of that name (``-m sweep`` = ``-m experiment=sweep``), which
Hydra alone would reject. Bad input exits with status 2 and one line naming the key or file and the fix.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from typing import Any, Optional

from harness.options import CONF, groups, presets

# Hydra flags that take a value in the next token
_VALUE_FLAGS = {"-c", "--cfg", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-p", "--package",
                "--experimental-rerun", "-sc", "--shell-completion"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_PLUGIN_LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm")


def _default_option(group: str) -> Optional[str]:
    """The option conf/config.yaml's defaults list picks for ``group``."""
    from omegaconf import OmegaConf

    for item in OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").defaults):  # type: ignore[union-attr]
        if isinstance(item, dict) and group in item:
            return item[group]
    return None


def _type_name(t: Any) -> str:
    return (t.__name__ if isinstance(t, type) else str(t)).replace("typing.", "").replace("NoneType", "None")


def group_help(spec: str) -> str:
    """What ``--help GROUP[=OPTION]`` prints: the option's keys, their types (the group's schema), values
    and comments (the option's YAML file). ConfigError for a group without keys or an unknown option."""
    import dataclasses
    import re
    import typing

    from harness.config import _GROUPS
    from harness.errors import ConfigError
    from harness.methods import get_method

    group, _, option = spec.partition("=")
    g = groups()
    typed_groups = sorted(n for n in g if n == "method" or n in _GROUPS)
    if group not in typed_groups:
        raise ConfigError(f"--help {spec}: {group!r} is not a config group with keys; use one of "
                          f"{', '.join(typed_groups)} (e.g. --help method or --help method={g['method'][0]})")
    option = option or _default_option(group) or g[group][0]
    if option not in g[group]:
        raise ConfigError(f"--help {spec}: no option {option!r} in {group}; choose one of {', '.join(g[group])}")
    path = CONF / group / f"{option}.yaml"
    values: dict[str, tuple[str, str]] = {}
    doc: list[str] = []
    for line in path.read_text().splitlines():
        m = re.match(r"^(\w+):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if m:
            values[m.group(1)] = (m.group(2), m.group(3) or "")
        elif line.startswith("#") and not values and "@package" not in line:
            doc.append(line.lstrip("# "))
    schema = get_method(values.get("name", (option, ""))[0]).config_cls if group == "method" else _GROUPS[group]
    hints = typing.get_type_hints(schema)
    rows = []
    for f in dataclasses.fields(schema):
        value, comment = values.get(f.name, ("", ""))
        if not value and f.name not in values:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            value = repr(default)
        rows.append((f"{group}.{f.name}", _type_name(hints[f.name]), value, comment))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = [f"{group}={option}  (conf/{group}/{option}.yaml; other options: "
            f"{', '.join(o for o in g[group] if o != option) or 'none'})", *[f"  {d}" for d in doc], ""]
    return "\n".join(head + [f"  {k:<{widths[0]}}  {t:<{widths[1]}}  {v:<{widths[2]}}  {c}".rstrip()
                              for k, t, v, c in rows])


def _not_a_preset(word: str, known: dict[str, str]) -> str:
    """The message for a bare word that names no preset: a group name, a typo of a preset, or neither."""
    import difflib

    g = groups()
    if word in g:
        return (f"'{word}': not a preset; to choose a {word} write {word}=<option> (options: {', '.join(g[word])}), "
                f"with '=' and no spaces")
    close = difflib.get_close_matches(word, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"'{word}': not a preset; {hint}presets are {sorted(known)} (or use key=value overrides)"


def map_bare_words(argv: list[str]) -> list[str]:
    """Replace each bare word (no '=', not a flag or a flag's value) with ``experiment=<word>``."""
    from harness.errors import ConfigError

    known = presets()
    out: list[str] = []
    prev = ""
    for tok in argv:
        bare = not tok.startswith("-") and "=" not in tok and prev not in _VALUE_FLAGS
        if bare and not (prev == "--info" and tok in _INFO_VALUES):
            if tok not in known:
                raise ConfigError(_not_a_preset(tok, known))
            tok = f"experiment={tok}"
        out.append(tok)
        prev = tok
    return out


def flags_first(argv: list[str]) -> list[str]:
    """Flags (and their values) before the overrides: Hydra's parser rejects ``a=1 -m b=1,2`` otherwise."""
    flags: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-") and "=" not in tok:
            flags.append(tok)
            takes = tok in _VALUE_FLAGS or (tok in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in _INFO_VALUES)
            if takes and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            rest.append(tok)
        i += 1
    return flags + rest


def check_flags(argv: list[str]) -> None:
    """Hydra's own argument parser, but an error is one ConfigError line instead of a usage screen."""
    from harness.errors import ConfigError
    from harness.hydra_compat import get_args_parser

    if "--version" in argv:
        return
    parser = get_args_parser()

    def error(message: str) -> None:
        raise ConfigError(f"{message} (python -m harness --help lists the flags and options)")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    modes = [f for f, on in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                             ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)}: use one of them at a time (e.g. --cfg job without -m)")


def check_output_dir(argv: list[str]) -> None:
    """The folder this command writes into (``hydra.run.dir``, or ``hydra.sweep.dir`` with ``-m``; the last
    override or conf/config.yaml's) can be created: checked before Hydra creates it (ConfigError otherwise)."""
    from omegaconf import OmegaConf

    from harness.run_folder import check_creatable

    if any(a in argv for a in ("--cfg", "-c", "--info", "-i", "--hydra-help", "--shell-completion", "-sc",
                               "--version")):
        return  # nothing is written
    key = "hydra.sweep.dir" if ("-m" in argv or "--multirun" in argv) else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(f"{key}=")]
    hydra = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").hydra, resolve=False)
    assert isinstance(hydra, dict)
    check_creatable(given[-1] if given else str(hydra[key.split(".")[1]]["dir"]), key)


def check_data(argv: list[str]) -> None:
    """The GLUE data of the command's task(s) can be found (:func:`harness.preflight.data_problem`): checked
    before torch and transformers are imported, so that a command without data fails at once (DataError)."""
    from harness.errors import DataError
    from harness.preflight import data_problem

    problem = data_problem(argv)
    if problem is not None:
        raise DataError(problem)


def help_text() -> str:
    """What ``python -m harness --help`` prints."""
    lines = [
        "usage: python -m harness [-m] [PRESET] [group=option] [key=value ...]",
        "",
        "  -m, --multirun   run a sweep (comma lists and presets that define hydra.sweeper.params)",
        "  PRESET           a bare word selects conf/experiment/PRESET.yaml",
        "  --cfg job        print the composed config and exit;  --hydra-help  Hydra's own help",
        "  --help GROUP[=OPTION]  the keys of a group's option, their types and values (e.g. --help train)",
        "  --dry-run        list the run or the sweep's jobs, their folders and what each would do; write nothing",
        "",
        "config groups (group=option):",
    ]
    g = groups()
    g.setdefault("hydra/launcher", [])
    g["hydra/launcher"] = sorted(set(g["hydra/launcher"]) | set(_PLUGIN_LAUNCHERS))
    for name, opts in g.items():
        lines.append(f"  {name:<16} {', '.join(opts)}")
    lines += ["", "presets:"]
    for name, doc in presets().items():
        lines.append(f"  {name:<16} {doc}")
    lines += [
        "",
        "examples:",
        "  GLUE_DIR=../shared/data/glue python -m harness                      # LoRA on MiniLM + SST-2",
        "  python -m harness method=adalora task=rte train.max_steps=500",
        "  python -m harness -m sweep                                           # the default sweep",
        "  python -m harness -m method=lora,dora budget=4,8,16 seed=0,1,2 hydra/launcher=joblib",
    ]
    return "\n".join(lines)


def _one_line(e: BaseException) -> str:
    """A Hydra/OmegaConf error as one line that names the key or the override and the fix."""
    import re

    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        # an override the group's schema rejects (harness/config.py): the key and the schema's reason, as the
        # typed merge of harness.config.to_typed words it
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    if isinstance(e, OverrideParseException):
        return (f"'{e.override}': cannot parse this override ({e.message.splitlines()[0]}); write key=value, and "
                f"quote values holding spaces or brackets, e.g. 'key=[1,2]'")
    text = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
    if isinstance(e, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        opts = re.search(r"Available options in '[^']+':\s*(.*?)\s*(Config search path|$)", text)
        if m:
            choices = f"; choose one of: {', '.join(opts.group(1).split())}" if opts else ""
            return f"{m.group(1)}={m.group(2)}: no such option in conf/{m.group(1)}/{choices}"
    return re.sub(r"\s*Config search path:.*$", "", text) or type(e).__name__


def end_text(outcome: Any) -> str:
    """What a run or a sweep says when it ends (docs/output.md): a sweep's summary
    (:class:`harness.sweeper.SweepOutcome`), else the run's block (from :func:`harness.app.job`'s dict)."""
    from harness.summaries import run_block
    from harness.sweeper import SweepOutcome

    if isinstance(outcome, SweepOutcome):
        return outcome.summary
    return run_block(outcome) if isinstance(outcome, dict) else ""


def job_results(outcome: Any) -> list[dict[str, Any]]:
    """Each job's outcome dict: a sweep's jobs (some may have run in other processes), or the one run's."""
    from harness.sweeper import SweepOutcome

    if isinstance(outcome, SweepOutcome):
        return outcome.jobs
    return [outcome] if isinstance(outcome, dict) else []


def exit_status(outcome: Any) -> int:
    """Print the jobs not done to stderr; 0 when every job is done (or skipped: another process runs it
    now), else 1."""
    from harness.redact import redact

    results = job_results(outcome)
    for r in results:  # jobs another process runs now are not failures of this sweep
        if r.get("status") == "skipped-running":
            print(redact(f"skipped-running: {r.get('error')}"), file=sys.stderr)
    bad = [r for r in results if r.get("status") not in ("done", "skipped-running")]
    for r in bad:
        print(redact(f"{r.get('status')}: {r.get('run_dir')}: {r.get('error')}"), file=sys.stderr)
    return 1 if bad else 0


def dry_run(argv: list[str]) -> int:
    """``--dry-run``: print the run or the sweep's jobs, their folders and actions (harness/dry_run.py; a
    two-stage sweep: stage 1's jobs and the plan of stage 2); write nothing. Bad input raises HarnessError as
    for a real run; the exit status is the real command's (:func:`harness.dry_run.exit_status`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness import app, dry_run as dr
    from harness.errors import ConfigError

    multirun = "-m" in argv or "--multirun" in argv
    other = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    if other:
        raise ConfigError(f"--dry-run: cannot be combined with {other[0]}; use it alone or with -m")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    stage2 = None
    try:
        if not multirun:
            rows = dr.single(argv)
        else:
            outcome = app.run_hydra([*argv, "hydra/hydra_logging=disabled", "hydra.sweeper.dry_run=true"]).value
            rows, stage2 = outcome.dry_rows, outcome.stage2
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from None
    print(dr.two_stage(rows, stage2) if stage2 is not None else dr.table(rows))
    status = dr.exit_status(rows, multirun=multirun)
    if status == 2:
        blocked = next(r["action"] for r in rows if r["action"].startswith((dr.BUSY, dr.BLOCKED)))
        print(f"error: {blocked.split(': ', 1)[1]}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from harness.errors import HarnessError
    from harness.redact import redact

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        i = argv.index("--help" if "--help" in argv else "-h")
        topic = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
        try:
            print(group_help(topic) if topic else help_text())
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    warnings.filterwarnings("ignore", message=r".*validated against ConfigStore schema.*")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    try:
        argv = flags_first(map_bare_words(argv))
        check_flags(argv)
        if dry:
            return dry_run(argv)
        check_output_dir(argv)
        check_data(argv)
    except HarnessError as e:
        print(redact(f"error: {e}"), file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:  # torchrun: only rank 0 keeps a run folder (its path is broadcast to the others)
        argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.gettempdir()}/harness-rank{rank}",
                 "hydra/job_logging=disabled"]
    if "--hydra-help" in argv:
        argv = [a for a in argv if not a.startswith("experiment=")]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us; we print one line
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness import app
    from harness.loop import Stopped

    try:
        result = app.run_hydra(argv)
    except HarnessError as e:
        print(redact(f"error: {e}"), file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as e:
        print(redact(f"error: {_one_line(e)}"), file=sys.stderr)
        return 2
    except SystemExit as e:  # Hydra's argument parser already printed its message
        return e.code if isinstance(e.code, int) else 2
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to continue from the last checkpoint", file=sys.stderr)
        return 130
    if result.mode == "run" and isinstance(result.value, dict) and \
            result.value.get("status") in ("invalid", "skipped-running"):  # bad input, or a busy folder
        print(redact(f"error: {result.value.get('error')}"), file=sys.stderr)
        return 2
    text = end_text(result.value).rstrip("\n")
    if rank == 0 and text:
        print(redact(text), flush=True)
    return exit_status(result.value)


if __name__ == "__main__":
    sys.exit(main())
