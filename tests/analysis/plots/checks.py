"""Assertions on matplotlib Figures shared by the figure tests: what a reader sees, not that a file exists."""

from __future__ import annotations

import re

from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: an internal name such as ``rte_minilm_b4_T1200`` or ``tiny_bert``
SLUG = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9]+")


def titles(fig: Figure) -> list[str]:
    """The figure's title and every panel's title that is set."""
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    return out + [ax.get_title() for ax in fig.axes if ax.get_title()]


def data_axes(fig: Figure) -> list[Axes]:
    """Visible panels that draw data (colour bars left out)."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")
            and (ax.lines or ax.collections or ax.images or ax.containers)]


def assert_no_slug(fig: Figure) -> None:
    for t in titles(fig):
        assert not SLUG.search(t), f"internal name in title {t!r}"


def assert_legends(fig: Figure) -> None:
    """Every panel with data has a legend (an image: a colour bar), or the figure has one legend."""
    has_colorbar = any(hasattr(ax, "_colorbar") for ax in fig.axes)
    for ax in data_axes(fig):
        ok = ax.get_legend() is not None or bool(fig.legends) or (bool(ax.images) and has_colorbar)
        assert ok, f"panel {ax.get_title()!r} has no legend"


def assert_no_offset_text(fig: Figure) -> None:
    fig.canvas.draw()
    for ax in data_axes(fig):
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", f"offset text on {ax.get_title()!r}"


def assert_publication(fig: Figure) -> None:
    """No slug in a title, legends everywhere, no offset text."""
    assert_no_slug(fig)
    assert_legends(fig)
    assert_no_offset_text(fig)
