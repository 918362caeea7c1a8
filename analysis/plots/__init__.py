"""Plots: functions take ``ax=None`` and return the Axes (or a Figure); they never write files."""
