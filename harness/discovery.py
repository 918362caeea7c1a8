"""Discovery of one-file plugins: every module of a package imported, so that each registers itself (the
methods of harness/methods/, the problem types of harness/problems/)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable, Sequence


def import_modules(package: str, path: Iterable[str], skip: Sequence[str] = ()) -> list[str]:
    """Import every module of ``package`` (found on its ``__path__``) but those named in ``skip``; their
    names, sorted."""
    found = sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in skip)
    for module in found:
        importlib.import_module(f"{package}.{module}")
    return found
