"""Command line: ``python -m harness [-m] [PRESET] [key=value ...]``.

A bare word selects the experiment preset of that name (``-m sweep`` = ``-m experiment=sweep``), which
Hydra alone would reject. Bad input exits with status 2 and one line naming the key or file and the fix.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"
# Hydra flags that take a value in the next token
_VALUE_FLAGS = {"-c", "--cfg", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-p", "--package",
                "--experimental-rerun", "-sc", "--shell-completion"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_PLUGIN_LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm")


def presets() -> dict[str, str]:
    """Experiment presets (bare words) and the first comment line of each."""
    out = {}
    for f in sorted((CONF / "experiment").glob("*.yaml")):
        lines = [ln[1:].strip() for ln in f.read_text().splitlines() if ln.startswith("#") and "@package" not in ln]
        out[f.stem] = lines[0] if lines else ""
    return out


def groups() -> dict[str, list[str]]:
    """Config groups under conf/ and their options."""
    out: dict[str, list[str]] = {}
    for d in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        opts = sorted(f.stem for f in d.glob("*.yaml"))
        if opts:
            out[str(d.relative_to(CONF))] = opts
    return out


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
                raise ConfigError(f"'{tok}': not a preset; presets are {sorted(known)} (or use key=value overrides)")
            tok = f"experiment={tok}"
        out.append(tok)
        prev = tok
    return out


def help_text() -> str:
    """What ``python -m harness --help`` prints."""
    lines = [
        "usage: python -m harness [-m] [PRESET] [group=option] [key=value ...]",
        "",
        "  -m, --multirun   run a sweep (comma lists and presets that define hydra.sweeper.params)",
        "  PRESET           a bare word selects conf/experiment/PRESET.yaml",
        "  --cfg job        print the composed config and exit;  --hydra-help  Hydra's own help",
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
    text = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from harness.errors import HarnessError

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return 0
    try:
        argv = map_bare_words(argv)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:  # torchrun: only rank 0 keeps a run folder (its path is broadcast to the others)
        argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.gettempdir()}/harness-rank{rank}",
                 "hydra/job_logging=disabled"]
    if "--hydra-help" in argv:
        argv = [a for a in argv if not a.startswith("experiment=")]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us; we print one line
    warnings.filterwarnings("ignore", message=r".*validated against ConfigStore schema.*")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness import app, sweeper

    sys.argv = [sys.argv[0] if sys.argv else "harness", *argv]
    app.USER_ERRORS.clear()
    try:
        app.main()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    if app.USER_ERRORS:
        print(f"error: {app.USER_ERRORS[0]}", file=sys.stderr)
        return 2
    bad = [r for r in sweeper.LAST_SWEEP if r.get("status") != "done"]
    if bad:
        for r in bad:
            print(f"{r.get('status')}: {r.get('run_dir')}: {r.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
