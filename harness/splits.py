"""A validation split that shares no text with training: held-out groups of texts related by containment.

SST-2's train file holds every phrase of each parsed sentence (67,349 rows from 6,885 sentences): a random
10% of the rows puts sub-phrases of training sentences into validation (88% of them were contained in a
training phrase), so validation scores ran 3-5 points above dev and learning rates were chosen on a leak.

``carve_groups`` holds out whole *groups* instead. Texts are compared as whitespace-token sequences; text x
is *contained* in y when x's tokens are a contiguous run of y's. A *root* is a text contained in no other
(a full sentence); each root's group is the root and every text contained in that root only. Groups are held
out in a random order (``split_seed``) until the held-out rows reach ``fraction`` of the file; texts contained
in several roots of which one is held out are *dropped* (neither trained on nor scored), and the rest train.
Then no validation text is contained in a training text, and none contains one (tested on SST-2 itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class GroupSplit:
    """Row indices into the full train file: ``valid`` (random order), ``train`` (sorted), ``dropped`` (sorted)."""

    valid: np.ndarray
    train: np.ndarray
    dropped: np.ndarray
    roots: int  # groups in the file
    valid_roots: int  # groups held out


def _roots_of(tokens: Sequence[tuple[str, ...]]) -> tuple[list[int], dict[tuple[str, ...], list[int]]]:
    """(root rows: one row per distinct maximal text, rows of each distinct text)."""
    rows: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(tokens):
        rows.setdefault(t, []).append(i)
    inside = set()
    for t in rows:
        n = len(t)
        for a in range(n):
            for b in range(a + 1, n + 1 if a else n):  # every proper contiguous run of t
                if t[a:b] in rows:
                    inside.add(t[a:b])
    return [r[0] for t, r in rows.items() if t not in inside], rows


def carve_groups(texts: Sequence[str], fraction: float, split_seed: int) -> GroupSplit:
    """Hold out groups of ``texts`` (one string per row) until ``round(fraction·n)`` rows are held out.

    ``fraction`` in (0, 1); DataError-free: the caller checks that rows are left to train on.
    """
    tokens = [tuple(str(s).split()) for s in texts]
    roots, rows = _roots_of(tokens)
    owners: dict[tuple[str, ...], list[int]] = {}  # distinct text -> the roots (row ids) containing it
    for r in roots:
        t = tokens[r]
        n = len(t)
        for a in range(n):
            for b in range(a + 1, n + 1):
                if t[a:b] in rows:
                    owners.setdefault(t[a:b], []).append(r)
    group: dict[int, list[int]] = {r: [] for r in roots}
    for t, own in owners.items():
        own = sorted(set(own))
        if len(own) == 1:
            group[own[0]].extend(rows[t])
    target = max(1, int(round(fraction * len(texts))))
    order = np.random.default_rng(split_seed).permutation(len(roots))
    held: set[int] = set()
    valid: list[int] = []
    for k in order:
        if len(valid) >= target:
            break
        r = roots[int(k)]
        held.add(r)
        valid.extend(sorted(group[r]))
    dropped = sorted(i for t, own in owners.items() if len(set(own)) > 1 and held.intersection(own) for i in rows[t])
    out = set(valid) | set(dropped)
    train = np.asarray([i for i in range(len(texts)) if i not in out], dtype=np.int64)
    return GroupSplit(np.asarray(valid, dtype=np.int64), train, np.asarray(dropped, dtype=np.int64),
                      len(roots), len(held))
