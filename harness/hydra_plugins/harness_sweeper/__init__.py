"""Hydra accepts sweepers only from the ``hydra_plugins`` package; the implementation is
:class:`harness.sweeper.HarnessSweeper`."""

from harness.sweeper import HarnessSweeper as _HarnessSweeper


class HarnessSweeper(_HarnessSweeper):
    """See :class:`harness.sweeper.HarnessSweeper`."""


from harness.launcher import PackedLauncher as _PackedLauncher  # noqa: E402


class PackedLauncher(_PackedLauncher):
    """See :class:`harness.launcher.PackedLauncher`."""
