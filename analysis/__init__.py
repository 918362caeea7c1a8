"""Analysis of run folders: loading (DataFrames), computing (pure functions), plotting (Axes in, Axes out).

Only the command line (``python -m analysis``) writes files.
"""
