"""Problem-type registry: a problem type is one module of this package that registers itself by name with
:func:`register_problem` (classification, regression, causal_lm, ...).

Importing this package imports every module in it (:func:`harness.discovery.import_modules`, no list to edit), so that adding a problem
type is adding its file (docs/configuration.md); a module elsewhere registers the same way once imported.
"""

from __future__ import annotations

import difflib
from typing import Callable, TypeVar

from harness.discovery import import_modules
from harness.errors import ConfigError
from harness.problems.base import Evaluation, ProblemType

PROBLEMS: dict[str, type[ProblemType]] = {}

P = TypeVar("P", bound=type[ProblemType])

#: modules of this package that define no problem type
NOT_PROBLEMS = ("base",)

__all__ = ["PROBLEMS", "Evaluation", "ProblemType", "get_problem", "register_problem", "unregister_problem"]


def register_problem(name: str) -> Callable[[P], P]:
    """Class decorator adding a problem type to the registry under ``name`` (duplicates are refused)."""

    def deco(cls: P) -> P:
        if name in PROBLEMS:
            raise ValueError(f"problem type '{name}' is already registered by {PROBLEMS[name].__module__}")
        cls.name = name
        PROBLEMS[name] = cls
        return cls

    return deco


def unregister_problem(name: str) -> None:
    """Remove a registered problem type (tests that register one of their own)."""
    PROBLEMS.pop(name, None)


def get_problem(name: str) -> ProblemType:
    """The registered problem type ``name``; ConfigError naming ``task.problem`` with close matches otherwise."""
    try:
        return PROBLEMS[name]()
    except KeyError:
        close = difflib.get_close_matches(name, list(PROBLEMS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"task.problem: unknown problem type '{name}'{hint}; registered: "
                          f"{', '.join(sorted(PROBLEMS))} (a new one is a file in harness/problems/)") from None


def discover() -> list[str]:
    """Import every problem-type module of this package (each registers itself); their names, sorted."""
    return import_modules(__name__, __path__, NOT_PROBLEMS)

discover()
