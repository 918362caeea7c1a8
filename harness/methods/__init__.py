"""Method registry: a method is one module of this package that registers itself by name with :func:`register`.

Importing this package imports every module in it (:func:`harness.discovery.import_modules`, no list to edit), so that adding a method
is adding its file (and its ``conf/method/<name>.yaml``): docs/methods.md. Registering also hands the method's
config schema to :mod:`harness.config` (which never imports the methods).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from harness.discovery import import_modules
from harness.config import register_method_schema, unknown_method
from harness.methods.base import Method

METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type[Method])

#: modules of this package that define no method
NOT_METHODS = ("base",)


def register(name: str) -> Callable[[M], M]:
    """Class decorator adding a method to the registry under ``name`` (duplicates are refused)."""

    def deco(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered by {METHODS[name].__module__}")
        if not cls.label:
            raise ValueError(f"method '{name}' ({cls.__module__}): set the class attribute label (display name)")
        cls.name = name
        register_method_schema(name, cls.config_cls, cls.validate_config)
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    """The registered method class; ConfigError with close matches otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise unknown_method(name, METHODS) from None


def discover() -> list[str]:
    """Import every method module of this package (each registers itself); their names, sorted."""
    return import_modules(__name__, __path__, NOT_METHODS)

discover()
