"""The error every analysis command turns into exit status 2 with one ``error:`` line."""


class BadOption(ValueError):
    """An option's value is unusable; the message names the option and the fix (exit 2)."""
