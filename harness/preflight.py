"""Checks the CLI makes before it imports torch, transformers or PEFT (a few seconds of imports on a CPU).

:func:`data_problem` composes the command's config from ``conf/`` (the ``task`` group and what the command
line and the experiment preset set in it; for a sweep, every value its task keys sweep over) and asks
:func:`harness.glue.source_problem` whether each GLUE task's data can be found: a command that would fail
for want of data says so in about a second instead of after the imports. The check is one-sided: it speaks
only when the data is surely missing; anything it cannot compose or judge (a preset that overrides the
method group, an unknown task, custom files) is left to the full validation, which runs as before.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

#: flags after which nothing trains (Hydra prints or completes something), or that change which config is read
_SKIP_FLAGS = ("--cfg", "-c", "--info", "-i", "--hydra-help", "--shell-completion", "-sc", "--version",
               "--experimental-rerun", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
#: the most task configurations a sweep's task keys may make before the check leaves them to the sweeper
_MAX_COMBOS = 64


def _task_key(key: str) -> bool:
    return key == "task" or key.startswith("task.") or key.startswith("task/")


def _split(overrides: list[str]) -> Optional[tuple[list[str], list[list[str]]]]:
    """The overrides that bear on the task (``experiment=``, ``task=``, ``task.*=``): the plain ones, and for each
    swept one its values as single overrides. None when one cannot be parsed (the full path reports it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a bad override is the full validation's to word
        return None
    plain: list[str] = []
    swept: list[list[str]] = []
    for o in parsed:
        key = o.key_or_group
        if not (_task_key(key) or key == "experiment"):
            continue
        if o.is_sweep_override():
            swept.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            plain.append(f"{o.get_key_element()}={o.get_value_element_as_str()}")
    return plain, swept


def _compose(overrides: list[str]) -> Any:
    """conf/config.yaml composed with ``overrides``, without the method group (whose schemas come with the
    methods, that is with PEFT and torch; the task does not depend on it)."""
    from hydra import compose, initialize_config_dir

    import harness.config  # noqa: F401  (the group schemas and resolvers)
    from harness.options import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=["~method", *overrides], return_hydra_config=True)


def _swept_by_preset(cfg: Any, given: set[str]) -> list[list[str]]:
    """The task keys a preset's ``hydra.sweeper.params`` sweep over (but the command line does not set: it wins,
    as in Hydra's sweeper), as lists of single overrides."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=False)
    assert isinstance(params, dict)
    found = [f"{k}={v}" for k, v in params.items() if _task_key(str(k)) and str(k) not in given]
    split = _split(found)
    if split is None:
        raise ValueError("unparsable sweeper params")
    plain, swept = split
    return [[p] for p in plain] + swept


def data_problem(argv: list[str]) -> Optional[str]:
    """The one-line reason the data of this command's GLUE task(s) cannot be found, or None (found, not a GLUE
    task, or not judged here). ``argv``: the CLI's arguments (flags first, presets mapped to overrides)."""
    from harness.glue import source_problem

    if any(a in _SKIP_FLAGS for a in argv):
        return None
    multirun = "-m" in argv or "--multirun" in argv
    split = _split([a for a in argv if not a.startswith("-")])
    if split is None or (split[1] and not multirun):
        return None
    plain, swept = split
    try:
        base = _compose(plain)
        if multirun:
            given = {o.split("=", 1)[0] for o in plain + [s[0] for s in swept]}
            swept = _swept_by_preset(base, given) + swept
        combos = list(itertools.islice(itertools.product(*swept), _MAX_COMBOS + 1))
        if len(combos) > _MAX_COMBOS:
            return None
        for combo in combos:
            cfg = _compose(plain + list(combo)) if combo else base
            why = source_problem(cfg.task)
            if why is not None:
                return why
    except Exception:  # noqa: BLE001 - what cannot be composed here is the full validation's to report
        return None
    return None
