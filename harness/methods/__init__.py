"""Method registry: a method is one file that registers itself by name with :func:`register`."""

from __future__ import annotations

import difflib
from typing import Callable, TypeVar

from harness.config import store_method_schema
from harness.errors import ConfigError
from harness.methods.base import Method

METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])


def register(name: str) -> Callable[[M], M]:
    """Class decorator adding a method to the registry under ``name`` (duplicates are refused)."""

    def deco(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered by {METHODS[name].__module__}")
        cls.name = name
        METHODS[name] = cls
        store_method_schema(name, cls.config_cls)  # conf/method/<name>.yaml builds on it
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    """The registered method class; ConfigError with close matches otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHODS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"method: unknown method '{name}'{hint}; registered: {sorted(METHODS)}") from None


# the built-in methods register themselves on import
from harness.methods import adalora, dora, full, lora  # noqa: E402,F401
