"""harness.splits: no validation text inside a training text or around one (brute force by string search),
the held-out fraction, determinism, and SST-2 itself."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.splits import carve_groups


def _contained(x: str, y: str) -> bool:
    """x's tokens are a contiguous run of y's (independent of the module: padded string search)."""
    return f" {' '.join(x.split())} " in f" {' '.join(y.split())} "


def _phrases(rng: np.random.Generator, n_sentences: int) -> list[str]:
    """Sentences of a small vocabulary and random contiguous sub-phrases of them, as SST-2's file holds."""
    vocab = [f"w{i}" for i in range(30)]
    out = []
    for _ in range(n_sentences):
        s = list(rng.choice(vocab, size=int(rng.integers(3, 9))))
        out.append(" ".join(s))
        for _ in range(int(rng.integers(1, 6))):
            a = int(rng.integers(0, len(s)))
            b = int(rng.integers(a + 1, len(s) + 1))
            out.append(" ".join(s[a:b]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_validation_text_related_to_a_training_text(seed: int) -> None:
    texts = _phrases(np.random.default_rng(seed), 60)
    g = carve_groups(texts, 0.2, split_seed=seed)
    assert not set(g.valid) & set(g.train) and not set(g.dropped) & (set(g.valid) | set(g.train))
    assert sorted([*g.valid, *g.train, *g.dropped]) == list(range(len(texts)))
    for v in g.valid:
        for t in g.train:
            assert not _contained(texts[v], texts[t]) and not _contained(texts[t], texts[v]), (texts[v], texts[t])
    assert len(g.valid) >= round(0.2 * len(texts)) and g.valid_roots >= 1


def test_deterministic_in_split_seed() -> None:
    texts = _phrases(np.random.default_rng(5), 40)
    a, b, c = (carve_groups(texts, 0.25, s) for s in (3, 3, 4))
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.train, b.train)
    assert not np.array_equal(np.sort(a.valid), np.sort(c.valid))


def test_unrelated_texts_split_like_rows() -> None:
    texts = [f"sentence {i} alone" for i in range(100)]
    g = carve_groups(texts, 0.1, 0)
    assert len(g.valid) == 10 and len(g.train) == 90 and len(g.dropped) == 0 and g.roots == 100


@pytest.mark.slow
def test_sst2_validation_shares_no_phrase_with_training() -> None:
    glue = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[3] / "shared/data/glue"))
    path = glue / "SST-2" / "train.tsv"
    if not path.is_file():
        pytest.skip("no SST-2 train file")
    texts = list(pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)["sentence"])
    g = carve_groups(texts, 0.1, 0)
    valid = {tuple(texts[i].split()) for i in g.valid}
    train = [tuple(texts[i].split()) for i in g.train]
    train_set = set(train)
    # no validation text is a run of a training text, and no training text is a run of a validation text
    for t in train:
        assert not any(t[a:b] in valid for a in range(len(t)) for b in range(a + 1, len(t) + 1))
    for v in valid:
        assert not any(v[a:b] in train_set for a in range(len(v)) for b in range(a + 1, len(v) + 1))
    assert 0.09 <= len(g.valid) / len(texts) <= 0.11 and len(g.dropped) < 0.05 * len(texts)
