"""Secrets never reach a file: values of secret-looking environment variables are masked in what we write.

A variable counts as secret when its name contains KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL or AUTH
(``WANDB_API_KEY``, ``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ...) and its value has at least 6 characters.
Records (``write_json_atomic``), ``error.txt`` and the log handlers of a run pass through :func:`redact`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_MIN_LEN = 6
MASK = "***"


def secret_values() -> list[str]:
    """Values of the secret-looking environment variables, longest first."""
    vals = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LEN}
    return sorted(vals, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for v in secret_values():
        if v in text:
            text = text.replace(v, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string (keys and values) of a JSON-like tree."""
    secrets = secret_values()
    if not secrets:
        return obj

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            for v in secrets:
                if v in o:
                    o = o.replace(v, MASK)
            return o
        if isinstance(o, dict):
            return {walk(k): walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return o

    return walk(obj)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secret values in the formatted message (and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not secret_values():
            return True
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_filter() -> None:
    """Add :class:`RedactingFilter` to every handler of the root logger (once)."""
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
