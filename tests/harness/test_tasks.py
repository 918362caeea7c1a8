"""GLUE and user tasks: row and label counts of the real files, parsing rules, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.config import TaskConfig
from harness.errors import DataError
from harness.tasks import GLUE, TrainBatches, collate, encode, load_task, padding_share
from tests.conftest import GLUE as GLUE_DIR

STATS = json.loads((GLUE_DIR / "stats.json").read_text())


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_rows_and_labels_match_published_counts(task: str) -> None:
    spec = GLUE[task]
    data = load_task(TaskConfig(name=task, glue_dir=str(GLUE_DIR)))
    for split, part in (("train", data.train), ("dev", data.dev)):
        st = STATS[f"{spec.folder}/{split}.tsv"]
        assert len(part) == st["rows"]
        if spec.labels is not None:
            counts = {spec.labels[i]: int(c) for i, c in zip(*np.unique(part.labels, return_counts=True))}
            assert counts == st["labels"]
        else:
            assert part.labels.min() >= 0 and part.labels.max() <= 5
    assert data.num_labels == (1 if spec.labels is None else len(spec.labels))


def test_glue_dir_from_environment() -> None:
    data = load_task(TaskConfig(name="rte"))  # $GLUE_DIR set by conftest
    assert data.source.endswith("RTE") and len(data.dev) == 277


def test_missing_glue_folder_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"SST-2/train.tsv: not found.*GLUE_DIR"):
        load_task(TaskConfig(name="sst2", glue_dir=str(tmp_path)))
    with pytest.raises(DataError, match="GLUE folder not found"):
        load_task(TaskConfig(name="sst2", glue_dir=str(tmp_path / "nope")))


def test_malformed_tsv_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "RTE").mkdir()
    good = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
    (tmp_path / "RTE" / "train.tsv").write_text(good + "1\ta\tb\tentailment\textra\n")
    (tmp_path / "RTE" / "dev.tsv").write_text(good)
    with pytest.raises(DataError, match=r"RTE/train.tsv: malformed TSV.*line 3"):
        load_task(TaskConfig(name="rte", glue_dir=str(tmp_path)))


def test_unknown_label_is_named(tmp_path: Path) -> None:
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\nok\t1\nbad\t7\n")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    with pytest.raises(DataError, match=r"labels \['7'\] outside"):
        load_task(TaskConfig(name="sst2", glue_dir=str(tmp_path)))


def test_custom_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("review,stars\ngood,pos\nbad,neg\nfine,pos\n")
    (tmp_path / "dev.jsonl").write_text('{"review": "meh", "stars": "neg"}\n{"review": "great", "stars": "pos"}\n')
    cfg = TaskConfig(name="custom", train_file=str(tmp_path / "train.csv"), dev_file=str(tmp_path / "dev.jsonl"),
                     text_columns=["review"], label_column="stars")
    data = load_task(cfg)
    assert data.num_labels == 2 and data.train.labels.tolist() == [1, 0, 1] and data.dev.labels.tolist() == [0, 1]
    cfg.text_columns = ["text"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\]"):
        load_task(cfg)


def test_subsampling_is_seeded_and_dev_is_a_prefix() -> None:
    cfg = TaskConfig(name="sst2", max_train_samples=50, max_eval_samples=20)
    a, b, c = load_task(cfg, seed=0), load_task(cfg, seed=0), load_task(cfg, seed=1)
    assert a.train.texts == b.train.texts and a.train.texts != c.train.texts
    full = load_task(TaskConfig(name="sst2"))
    assert a.dev.texts == full.dev.texts[:20]


def test_batches_are_deterministic_and_cover_each_epoch() -> None:
    b1, b2 = TrainBatches(10, 4, seed=3), TrainBatches(10, 4, seed=3)
    first = [next(b1) for _ in range(6)]
    assert all(np.array_equal(x, next(b2)) for x in first)
    assert sorted(np.concatenate(first[:3]).tolist()) == list(range(10))


def test_dynamic_padding() -> None:
    from harness.models import load_tokenizer
    from harness.config import ModelConfig

    data = load_task(TaskConfig(name="rte", max_train_samples=8))
    enc = encode(data.train, load_tokenizer(ModelConfig()), 128)
    batch = collate(enc, np.arange(4), pad_id=0)
    longest = max(len(enc.input_ids[i]) for i in range(4))
    assert batch["input_ids"].shape == (4, longest)
    assert batch["attention_mask"].sum().item() == sum(len(enc.input_ids[i]) for i in range(4))
    assert "token_type_ids" in batch  # sentence pairs keep their segment ids


def test_length_grouped_batches_cover_each_epoch_and_pad_little() -> None:
    """Grouped batches: every example once an epoch, deterministic and resumable, far less padding than random."""
    lengths = np.random.default_rng(0).integers(5, 400, size=1000)
    grouped = TrainBatches(1000, 16, seed=2, lengths=lengths)
    epoch = [next(grouped) for _ in range(63)]  # 62 full batches and the last 8
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    again = TrainBatches(1000, 16, seed=2, lengths=lengths)
    again.seek(0, 16 * 10)
    assert np.array_equal(next(again), epoch[10])
    random_share = padding_share(lengths, TrainBatches(1000, 16, seed=2), 62)
    grouped_share = padding_share(lengths, TrainBatches(1000, 16, seed=2, lengths=lengths), 62)
    assert random_share > 0.4 and grouped_share < 0.05


class FakeDatasets:
    """Stands in for HF ``datasets``: records each load_dataset call (the real one retries ~25 s offline)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def load_dataset(self, name: str, config: str) -> dict[str, dict[str, list]]:
        self.calls.append((name, config))
        rows = {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}
        return {"train": rows, "validation": rows}


@pytest.fixture
def no_glue_dir(monkeypatch: pytest.MonkeyPatch) -> FakeDatasets:
    """No GLUE folder, no offline variables, a fake ``datasets`` installed."""
    import sys

    for var in ("GLUE_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeDatasets()
    monkeypatch.setitem(sys.modules, "datasets", fake)  # type: ignore[arg-type]
    return fake


def _offline_error(cfg: TaskConfig) -> str:
    import time

    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        load_task(cfg)
    assert time.perf_counter() - start <= 2.0
    msg = str(e.value)
    assert "\n" not in msg and "GLUE_DIR" in msg and "SST-2/train.tsv" in msg and "download_glue_data.py" in msg, msg
    return msg


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_by_environment_fails_at_once_naming_glue_dir(var: str, no_glue_dir: FakeDatasets,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, "1")
    assert var in _offline_error(TaskConfig(name="sst2"))
    assert no_glue_dir.calls == []  # datasets never asked: it would retry for ~25 s


def test_unreachable_hub_fails_at_once_naming_glue_dir(no_glue_dir: FakeDatasets,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    tried: list[tuple[tuple[str, int], float]] = []

    def refuse(address: tuple[str, int], timeout: float) -> None:
        tried.append((address, timeout))
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert "huggingface.co" in _offline_error(TaskConfig(name="sst2"))
    assert no_glue_dir.calls == [] and tried[0][0] == ("huggingface.co", 443) and tried[0][1] <= 1.5


def test_reachable_hub_loads_through_datasets(no_glue_dir: FakeDatasets, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    class Conn:
        def close(self) -> None:
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Conn())
    data = load_task(TaskConfig(name="sst2"))
    assert no_glue_dir.calls == [("glue", "sst2")] and len(data.train) == 3 and data.source == "hf:glue/sst2"


def test_cli_without_glue_dir_offline_exits_2_with_one_line(no_glue_dir: FakeDatasets, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from harness.__main__ import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["model=tiny_bert", "tracking=none", "train.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "GLUE_DIR" in err[0], err
