"""Plots: functions take ``ax=None`` and return the Axes (or a Figure); they never write files and never
pick a matplotlib backend. The conventions they share (titles, scaled axis labels, 1-based layers, method
labels and colours) are in :mod:`analysis.plots.style`; docs/figures.md lists them."""
