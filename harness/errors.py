"""User-facing errors: one clear line naming the key or file and the fix."""


class HarnessError(Exception):
    """An error caused by the user's input. The CLI prints it as one line and exits with status 2."""

    exit_code = 2


class ConfigError(HarnessError):
    """A configuration value is invalid (names the key and the fix)."""


class DataError(HarnessError):
    """A data file or folder is missing or malformed (names the file and the fix)."""


class RunFailed(Exception):
    """A run started but cannot produce a valid result (NaN loss, AdaLoRA budget never moved, ...)."""
