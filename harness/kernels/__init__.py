"""The harness's fast paths for PEFT's layers (fused DoRA forward, fused AdaLoRA allocator), shared by methods.

They subclass and swap private PEFT classes (``peft.tuners.lora.dora.DoraLinearLayer``,
``peft.tuners.lora.variants.DoraLinearVariant``, ``peft.tuners.adalora.layer.RankAllocator``/``SVDLinear``,
``peft.tuners.adalora.model.AdaLoraModel``), whose internals change between PEFT releases. They are used only
with the PEFT versions they are tested with (:data:`TESTED_PEFT`); with any other version a method falls back
to PEFT's own code path, with one warning. Import a kernel module only after :func:`fast_path_available`.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Optional

import peft

log = logging.getLogger(__name__)

#: PEFT versions the fast paths are tested with: lowest included, highest excluded (release numbers only)
TESTED_PEFT: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 21), (0, 22))

def _release(version: str) -> tuple[int, ...]:
    """``"0.21.2"`` / ``"0.22.0.dev0"`` -> (0, 21, 2) / (0, 22, 0): the leading numeric release."""
    m = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def fast_path_available(what: str, version: Optional[str] = None) -> bool:
    """Whether the installed PEFT (or ``version``) is one the fast paths are tested with; if not, warn once per
    ``what`` (e.g. "DoRA's fused forward") that PEFT's own code path is used instead."""
    v = version if version is not None else peft.__version__
    low, high = TESTED_PEFT
    ok = low <= _release(v) < high
    if not ok:
        _warn_untested(what, v)
    return ok


@functools.cache
def _warn_untested(what: str, version: str) -> None:
    """The warning that ``what`` uses PEFT's own code path with PEFT ``version``: once per process (cached)."""
    low, high = TESTED_PEFT
    log.warning("%s: PEFT %s is outside the versions it is tested with (>=%s, <%s); using PEFT's own code "
                "path (same results, slower)", what, version, ".".join(map(str, low)), ".".join(map(str, high)))
