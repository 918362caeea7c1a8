"""Tasks: the five small GLUE tasks (local GLUE folder, else HF ``datasets``), GLUE-like tasks named by one YAML
(``task.folder``, columns, labels, metrics), user CSV/JSONL tasks and reasoning-gym tasks (harness/rgdata.py).

A GLUE folder is laid out as GLUE's download script makes it (``$GLUE_DIR/SST-2/train.tsv``, ``dev.tsv``)
and read with quoting off and ``utf-8-sig`` (otherwise STS-B and MRPC silently lose rows). What a task's
examples become (batches, loss, metrics) is its problem type's (harness/problems/, ``task.problem``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from harness.buckets import pad_length
from harness.config import TaskConfig
from harness.glue import GLUE, TaskSpec, glue_dir, hub_problem, missing_folder_message, no_glue_message
from harness.splits import carve_groups
from harness.errors import ConfigError, DataError

if TYPE_CHECKING:
    from harness.problems.base import ProblemType

log = logging.getLogger(__name__)

#: a fixed public-domain English text sample (answer-free text loss: forgetting of a causal LM)
TEXT_SAMPLE = Path(__file__).with_name("data") / "text_sample.txt"


@dataclass
class Split:
    """Texts (one tuple of 1–2 strings per example) and labels (int ids, floats for regression, target strings for
    generation). ``refs``: per example what scoring needs besides the label (generation: id, answer, rule);
    ``plain``: raw text, no prompt (a causal LM's text-loss sample)."""

    texts: list[tuple[str, ...]]
    labels: np.ndarray
    refs: Optional[list[dict[str, Any]]] = None
    plain: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: Optional[int]) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.texts[:n], self.labels[:n], self.refs[:n] if self.refs is not None else None, self.plain)

    def take(self, idx: np.ndarray) -> "Split":
        """The examples at ``idx`` (in that order)."""
        refs = [self.refs[i] for i in idx] if self.refs is not None else None
        return Split([self.texts[i] for i in idx], self.labels[idx], refs, self.plain)


@dataclass
class TaskData:
    """A loaded task: train and dev splits plus how to score them."""

    name: str
    train: Split
    dev: Split
    problem: str
    num_labels: int
    metrics: tuple[str, ...]
    main_metric: str
    source: str
    valid: Optional[Split] = None  # carved from train (task.validation_fraction > 0), else None
    train_index: Optional[np.ndarray] = None  # rows of the task's full train file used for training
    valid_index: Optional[np.ndarray] = None  # rows of the full train file scored as validation
    split: dict[str, Any] = field(default_factory=dict)  # sizes, seed and index hash (recorded by the run)
    probes: dict[str, Split] = field(default_factory=dict)  # sets not trained on, scored at the start and the end


def index_hash(idx: np.ndarray) -> str:
    """A short hash of a set of row indices (sorted, int64): two runs with equal hashes used the same rows."""
    return hashlib.sha256(np.sort(np.asarray(idx, dtype=np.int64)).tobytes()).hexdigest()[:12]


def carve_validation(n: int, fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows ``0..n-1`` of a full train set: (held-out validation rows in a random order, training rows
    sorted). ``round(fraction·n)`` rows (at least 1) are held out, chosen by ``default_rng(split_seed)``
    only: the same split for every method, budget and training seed."""
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise DataError(f"task.validation_fraction: {fraction} of {n} training examples leaves none to train on; "
                        f"lower it")
    perm = np.random.default_rng(split_seed).permutation(n)
    return perm[:n_val], np.sort(perm[n_val:])


def read_tsv(path: Path, columns: Optional[tuple[str, ...]]) -> pd.DataFrame:
    """A GLUE TSV with quoting off and BOM stripped; DataError naming the file on any parse problem."""
    try:
        return pd.read_csv(
            path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", header=None if columns else 0,
            names=list(columns) if columns else None, dtype=str, keep_default_na=False, on_bad_lines="error",
        )
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed TSV ({str(e).strip()}); each row needs the same number of tab-separated fields") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header line and data rows") from None


def _labels(df: pd.DataFrame, column: str, labels: Optional[tuple[str, ...]], path: Path) -> np.ndarray:
    values = df[column].astype(str).str.strip()
    if labels is None:
        try:
            out = values.astype(np.float32).to_numpy()
        except ValueError:
            i = next(i for i, v in enumerate(values) if not _is_float(v))
            raise DataError(f"{_cell(path, i, column)}: must be numeric for a regression task, found "
                            f"'{values.iloc[i]}'; fix the file") from None
        bad = np.flatnonzero(~np.isfinite(out))
        if len(bad):
            raise DataError(f"{_cell(path, int(bad[0]), column)}: regression target '{values.iloc[bad[0]]}' is not a "
                            f"finite number; fix the row or drop it")
        return out
    index = {lab: i for i, lab in enumerate(labels)}
    known = values.isin(list(index)).to_numpy()
    if not known.all():
        unknown = sorted(set(values) - set(index))
        i = int(np.flatnonzero(~known)[0])
        raise DataError(f"{_cell(path, i, column)}: label '{values.iloc[i]}' is unknown (labels {unknown[:5]} outside "
                        f"{list(labels)}); fix the file or the task's labels")
    return values.map(index).to_numpy(dtype=np.int64)


def _cell(path: Path, i: int, column: str) -> str:
    """Where a cell is: the file, its data row (from 1, the header not counted) and column."""
    return f"{path}: data row {i + 1}, column '{column}'"


def _blank(v: Any) -> Optional[str]:
    """Why a cell holds no usable value (None when it does): null, NaN, a boolean or empty text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "is missing (null)"
    if isinstance(v, (bool, np.bool_)):
        return f"holds a boolean ({v})"
    if isinstance(v, str) and not v.strip():
        return "is empty"
    return None


def _check_cells(df: pd.DataFrame, text_cols: tuple[str, ...], label_col: str, path: Path,
                 classification: bool) -> None:
    """Every text and label cell holds a value; DataError naming file, row and column otherwise."""
    for col in (*text_cols, label_col):
        for i, v in enumerate(df[col].tolist()):
            why = _blank(v)
            if why is None and col == label_col and classification and str(v).strip().lower() == "nan":
                why = "is 'nan'"
            if why is not None:
                what = "text" if col in text_cols else "label"
                fix = "write it as text or a class name" if isinstance(v, (bool, np.bool_)) else "fill it in"
                raise DataError(f"{_cell(path, i, col)}: the {what} {why}; {fix} or drop the row")


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _split_from_frame(df: pd.DataFrame, text_cols: tuple[str, ...], label_col: str,
                      labels: Optional[tuple[str, ...]], path: Path) -> Split:
    missing = [c for c in (*text_cols, label_col) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)} (set task.text_columns / task.label_column)")
    if len(df) == 0:
        raise DataError(f"{path}: no data rows")
    _check_cells(df, text_cols, label_col, path, classification=labels is not None)
    texts = list(zip(*(df[c].astype(str).tolist() for c in text_cols)))
    return Split(texts, _labels(df, label_col, labels, path))


def _load_glue_local(spec: TaskSpec, root: Path) -> tuple[Split, Split]:
    folder = root / spec.folder
    splits = []
    for split in ("train", "dev"):
        path = folder / f"{split}.tsv"
        if not path.is_file():
            raise DataError(
                f"{path}: not found; GLUE_DIR / task.glue_dir must hold {spec.folder}/train.tsv and dev.tsv "
                f"as GLUE's download script lays them out (here: GLUE_DIR=../shared/data/glue)"
            )
        splits.append(_split_from_frame(read_tsv(path, spec.columns), spec.text_columns, spec.label_column, spec.labels, path))
    return splits[0], splits[1]


def _load_glue_hub(spec: TaskSpec) -> tuple[Split, Split]:
    """train and validation of ``spec`` from HF ``datasets`` (glue/<config>), after checking the hub can be
    reached (:func:`harness.glue.hub_problem`); DataError with :func:`no_glue_message` otherwise."""
    why = hub_problem(spec)
    if why is not None:
        raise DataError(why)
    try:
        import datasets
    except ImportError:  # found but not importable
        raise DataError(no_glue_message(spec, "HF datasets does not import (pip install -e '.[hf]')")) from None
    try:
        ds = datasets.load_dataset("glue", spec.hf_config)
    except Exception as e:  # noqa: BLE001 - any hub/network failure becomes one clear message
        raise DataError(no_glue_message(
            spec, f"HF datasets could not load glue/{spec.hf_config} ({type(e).__name__})")) from None
    out = []
    for split in ("train", "validation"):
        d = ds[split]
        texts = list(zip(*(d[c] for c in spec.hf_text_columns)))
        out.append(Split(texts, np.asarray(d["label"], dtype=np.float32 if spec.labels is None else np.int64)))
    return out[0], out[1]


def _read_user_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found (set task.train_file / task.dev_file to existing CSV or JSONL files)")
    try:
        if path.suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=True, dtype=False)
        if path.suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason}); re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header line and data rows") from None
    except (ValueError, pd.errors.ParserError) as e:
        shape = ("each line must be one JSON object with the text and label fields" if path.suffix in (".jsonl", ".json")
                 else "each row needs the same number of fields as the header")
        raise DataError(f"{path}: cannot parse ({str(e).splitlines()[0]}); {shape}") from None
    raise DataError(f"{path}: unknown extension '{path.suffix}'; use .csv, .tsv or .jsonl")


def _load_custom(cfg: TaskConfig, kind: str, default_metrics: tuple[str, ...]) -> TaskData:
    """A task from the user's files; ``kind`` (the problem type's ``label_kind``): class, number or text labels."""
    if not cfg.train_file or not cfg.dev_file:
        raise DataError("task.train_file / task.dev_file: a custom task needs both (CSV, TSV or JSONL files)")
    train_df = _read_user_file(Path(cfg.train_file))
    dev_df = _read_user_file(Path(cfg.dev_file))
    text_cols = tuple(cfg.text_columns)
    labels: Optional[tuple[str, ...]] = None
    if kind == "class":
        labels = _infer_labels(train_df, cfg.label_column, Path(cfg.train_file))
    if kind == "text":
        train = _text_split(train_df, text_cols, cfg.label_column, Path(cfg.train_file))
        dev = _text_split(dev_df, text_cols, cfg.label_column, Path(cfg.dev_file))
        metrics = tuple(cfg.metrics or default_metrics)
        return TaskData(cfg.name, train, dev, task_problem(cfg), 1, metrics, main_metric(metrics),
                        f"{cfg.train_file}, {cfg.dev_file}")
    train = _split_from_frame(train_df, text_cols, cfg.label_column, labels, Path(cfg.train_file))
    dev = _split_from_frame(dev_df, text_cols, cfg.label_column, labels, Path(cfg.dev_file))
    if labels is not None and len(labels) < 2:
        raise DataError(f"{cfg.train_file}: column '{cfg.label_column}' has a single label {list(labels)}; classification needs two or more")
    metrics = ("accuracy", "f1") if labels is not None and len(labels) == 2 else ("accuracy",)
    if labels is None:
        metrics = ("pearson", "spearman", "mse")
    metrics = tuple(cfg.metrics or metrics)
    return TaskData(cfg.name, train, dev, task_problem(cfg), 1 if labels is None else len(labels), metrics,
                    main_metric(metrics), f"{cfg.train_file}, {cfg.dev_file}")


def _infer_labels(df: pd.DataFrame, column: str, path: Path) -> tuple[str, ...]:
    """The label strings of a classification train file, sorted (numbers by value)."""
    if column not in df.columns:
        raise DataError(f"{path}: missing column '{column}'; found {list(df.columns)} (set task.label_column)")
    _check_cells(df, (), column, path, classification=True)
    return tuple(sorted({str(v).strip() for v in df[column]}, key=_label_key))


def _text_split(df: pd.DataFrame, text_cols: tuple[str, ...], label_col: str, path: Path) -> Split:
    """Prompt texts and target strings (a generative task's file): refs give each row an id and its answer."""
    missing = [c for c in (*text_cols, label_col) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)} (set task.text_columns / task.label_column)")
    if len(df) == 0:
        raise DataError(f"{path}: no data rows")
    _check_cells(df, text_cols, label_col, path, classification=False)
    texts = list(zip(*(df[c].astype(str).tolist() for c in text_cols)))
    answers = [str(v).strip() for v in df[label_col]]
    refs = [{"id": f"{path.stem}/{i}", "answer": a, "rule": "exact"} for i, a in enumerate(answers)]
    return Split(texts, np.asarray(answers, dtype=object), refs)


def main_metric(metrics: Sequence[str]) -> str:
    """A task's main metric: the first listed (pearson with spearman: their mean, as GLUE's STS-B)."""
    if "pearson" in metrics and "spearman" in metrics:
        return "pearson_spearman"
    return metrics[0]


def _glue_like(cfg: TaskConfig, kind: str, default_metrics: tuple[str, ...]) -> TaskSpec:
    """The :class:`TaskSpec` of a GLUE-like task named by its YAML (``task.folder``, columns, labels, metrics)."""
    if kind == "class" and not cfg.labels:
        raise DataError(f"task.labels: the GLUE-like task {cfg.name} needs its label strings in id order, e.g. "
                        f"task.labels=[neg,pos]")
    metrics = tuple(cfg.metrics or default_metrics or ("accuracy",))
    labels = tuple(cfg.labels) if kind == "class" and cfg.labels else None
    assert cfg.folder is not None
    return TaskSpec(cfg.name, cfg.folder, tuple(cfg.text_columns), cfg.label_column, None, labels, metrics,
                    main_metric(metrics), cfg.name, tuple(cfg.text_columns))


def _load_rg(cfg: TaskConfig) -> TaskData:
    """A reasoning-gym task (harness/rgdata.py): train and dev from disjoint seed ranges, train items whose question
    is also a dev question dropped (counted in ``split``), the forget sets and the text sample as probes."""
    from harness import rgdata

    rg = cfg.rg
    assert rg is not None
    cache = Path(rg.cache_dir)
    train_key, dev_key, forget_keys = rgdata.task_sets(rg)
    if rgdata.available():
        rgdata.check_dataset(rg.dataset)
        for name in rg.forget:
            rgdata.check_dataset(name, "task.rg.forget")
    train_set, dev_set = rgdata.load_set(train_key, cache), rgdata.load_set(dev_key, cache)
    dev_questions = {x["question"] for x in dev_set.items}
    kept = [x for x in train_set.items if x["question"] not in dev_questions]
    if not kept:
        raise DataError(f"task.rg: every train question of {rg.dataset} is also a dev question (a tiny question "
                        f"space); raise the difficulty through task.rg.options")
    train = _rg_split(kept, rg, train_set.rule, cfg.answer_marker)
    dev = _rg_split(dev_set.items, rg, dev_set.rule, cfg.answer_marker)
    probes = {}
    for key in forget_keys:
        s = rgdata.load_set(key, cache, "task.rg.forget")
        probes[key.dataset] = _rg_split(s.items, rg, s.rule, cfg.answer_marker, target="answer")
    probes["text"] = text_sample()
    metrics = tuple(cfg.metrics or ("exact_match",))
    data = TaskData(cfg.name, train, dev, task_problem(cfg), 1, metrics, main_metric(metrics),
                    f"reasoning_gym:{rg.dataset} ({train_set.source}, {dev_set.source})", probes=probes)
    data.split["shared_questions_dropped"] = len(train_set.items) - len(kept)
    return data


def _rg_split(items: list[dict[str, Any]], rg: Any, rule: str, marker: str, target: Optional[str] = None) -> Split:
    """Prompts (the questions), targets (answer or worked solution), refs (id, answer, scoring rule)."""
    from dataclasses import replace

    from harness import rgdata

    form = rg if target is None else replace(rg, target=target)
    targets = [rgdata.target_text(x, form, marker) for x in items]
    refs = [{"id": x["id"], "answer": x["answer"], "rule": rule} for x in items]
    return Split([(x["question"],) for x in items], np.asarray(targets, dtype=object), refs)


def text_sample(path: Path = TEXT_SAMPLE) -> Split:
    """The fixed text sample, one paragraph per example (plain text: the loss covers every token)."""
    paras = [" ".join(p.split()) for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return Split([(p,) for p in paras], np.asarray([""] * len(paras), dtype=object), None, plain=True)


def task_problem(cfg: TaskConfig) -> str:
    """The problem type of a task: a built-in GLUE task's own (STS-B: regression), else ``task.problem``
    (null: classification)."""
    if cfg.name in GLUE and cfg.folder is None:
        return GLUE[cfg.name].problem
    return cfg.problem or "classification"


def _label_key(v: str) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def load_task(cfg: TaskConfig, seed: int = 0, problem: Optional["ProblemType"] = None) -> TaskData:
    """Load train/dev of the configured task (GLUE, GLUE-like, custom or reasoning-gym); optional validation split
    and subsampling. ``problem``: the task's problem type (its label kind and default metrics; default
    classification).

    Order: ``validation_fraction`` > 0 first holds out a random ``split_seed``-seeded part of the *full* train
    set (so the split never depends on the training seed or on ``max_train_samples``); then
    ``max_train_samples`` takes a seeded random subset of the rest (the same for every method and run with
    that seed); ``max_eval_samples`` keeps the first examples of dev, and of the validation rows (in the
    split's random order, so a random subset of them; the rows held out stay out of training either way).
    """
    kind = problem.label_kind if problem is not None else ("number" if task_problem(cfg) == "regression" else "class")
    defaults = problem.default_metrics if problem is not None else ()
    if cfg.rg is not None:
        data = _load_rg(cfg)
    elif cfg.name == "custom" or (cfg.train_file and cfg.folder is None):
        data = _load_custom(cfg, kind, defaults)
    elif cfg.name in GLUE or cfg.folder is not None:
        spec = GLUE[cfg.name] if cfg.folder is None else _glue_like(cfg, kind, defaults)
        if cfg.folder is None and cfg.problem not in (None, spec.problem):
            raise ConfigError(f"task.problem: {cfg.name} is a {spec.problem} task, so {cfg.problem} does not apply; "
                              f"drop task.problem=... (it chooses the problem of a custom or GLUE-like task only)")
        root = glue_dir(cfg)
        if root is not None:
            if not root.is_dir():
                raise DataError(missing_folder_message(root, spec.folder))
            train, dev = _load_glue_local(spec, root)
            source = str(root / spec.folder)
        elif cfg.folder is not None:
            raise DataError(f"task.glue_dir: the GLUE-like task {cfg.name} reads {cfg.folder}/train.tsv and dev.tsv "
                            f"under task.glue_dir or $GLUE_DIR; set one")
        else:
            train, dev = _load_glue_hub(spec)
            source = f"hf:glue/{spec.hf_config}"
        problem_name = spec.problem if cfg.folder is None else task_problem(cfg)
        data = TaskData(spec.name, train, dev, problem_name, spec.num_labels, spec.metrics, spec.main_metric, source)
    else:
        raise DataError(f"task.name: unknown task '{cfg.name}'; GLUE tasks {sorted(GLUE)}, 'custom' with "
                        f"task.train_file/dev_file, a GLUE-like task (task.folder) or a reasoning-gym task (task.rg)")
    full = data.train
    n_full = len(full)
    train_idx = np.arange(n_full)
    held_out = np.zeros(0, dtype=np.int64)
    grouped = None
    if cfg.validation_fraction > 0:
        if cfg.validation_groups == "contained":
            grouped = carve_groups([" ".join(t) for t in full.texts], cfg.validation_fraction, cfg.split_seed)
            held_out, train_idx = grouped.valid, grouped.train
        else:
            held_out, train_idx = carve_validation(n_full, cfg.validation_fraction, cfg.split_seed)
        valid_idx = held_out[: cfg.max_eval_samples] if cfg.max_eval_samples is not None else held_out
        data.valid, data.valid_index = full.take(valid_idx), np.sort(valid_idx)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_idx):
        pick = np.sort(np.random.default_rng(seed).permutation(len(train_idx))[: cfg.max_train_samples])
        train_idx = train_idx[pick]
    data.train = full if len(train_idx) == n_full else full.take(train_idx)
    data.train_index = train_idx
    data.dev = data.dev.head(cfg.max_eval_samples)
    data.split = {"train_size": len(data.train), "dev_size": len(data.dev), **data.split}
    if data.valid is not None:
        assert data.valid_index is not None
        data.split.update(validation_fraction=cfg.validation_fraction, split_seed=cfg.split_seed,
                          validation_size=len(data.valid), validation_held_out=len(held_out),
                          validation_hash=index_hash(data.valid_index))
        if grouped is not None:
            data.split.update(validation_groups="contained", validation_dropped=len(grouped.dropped),
                              validation_roots=grouped.valid_roots)
    return data


@dataclass
class Encoded:
    """Token ids of one split (lists of variable length) and labels."""

    input_ids: list[list[int]]
    token_type_ids: Optional[list[list[int]]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def encode(split: Split, tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize once (truncated, unpadded; padding happens per batch)."""
    cols = list(zip(*split.texts))
    enc = tokenizer(*cols[:2], truncation=True, max_length=max_length, padding=False)
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), split.labels)


def collate(enc: Encoded, idx: np.ndarray, pad_id: int, multiple: int = 0,
            buckets: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """Pad the examples ``idx`` to the longest one, rounded up to ``multiple`` if > 0, or up to the smallest of
    ``buckets`` that holds it (harness/buckets.py): input_ids/attention_mask (B, L), labels (B,)."""
    seqs = [enc.input_ids[i] for i in idx]
    L = max(len(s) for s in seqs)
    if buckets:
        L = pad_length(L, buckets, multiple or 8)
    elif multiple > 0:
        L = -(-L // multiple) * multiple
    ids = np.full((len(seqs), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), L), dtype=np.int64)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = s
        mask[j, : len(s)] = 1
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if enc.token_type_ids is not None:
        tt = np.zeros((len(seqs), L), dtype=np.int64)
        for j, i in enumerate(idx):
            t = enc.token_type_ids[i]
            tt[j, : len(t)] = t
        batch["token_type_ids"] = torch.from_numpy(tt)
    batch["labels"] = torch.from_numpy(enc.labels[idx])
    return batch


class TrainBatches:
    """Endless, deterministic batches: epoch e uses permutation ``default_rng([seed, e])``.

    With ``lengths`` (length grouping), each run of ``GROUP`` batches' worth of the permutation is sorted by length
    and cut into batches, and the epoch's batches are shuffled (``default_rng([seed, e, 1])``): a batch holds
    examples of similar length, so little of it is padding, while every example is still seen once an epoch.
    The position (epoch, offset) is all that is needed to resume the stream exactly.
    """

    GROUP = 64  # batches whose examples are sorted together

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Optional[Sequence[int]] = None) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.epoch, self.offset = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if self.lengths is None:
            return perm
        size = self.GROUP * self.batch_size
        chunks = [c[np.argsort(-self.lengths[c], kind="stable")] for c in np.split(perm, range(size, self.n, size))]
        ordered = np.concatenate(chunks)
        batches = np.split(ordered, range(self.batch_size, self.n, self.batch_size))
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
        return np.concatenate([batches[i] for i in order])

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def seek(self, epoch: int, offset: int) -> None:
        """Continue the stream at ``(epoch, offset)`` (a resumed run)."""
        self.epoch, self.offset = int(epoch), int(offset)
        self._perm = self._permutation(self.epoch)

    def __next__(self) -> np.ndarray:
        if self.offset >= self.n:
            self.epoch += 1
            self.offset = 0
            self._perm = self._permutation(self.epoch)
        idx = self._perm[self.offset : self.offset + self.batch_size]
        self.offset += len(idx)
        return idx


def padding_share(lengths: Sequence[int], batches: TrainBatches, n_batches: int,
                  pad_to: Callable[[int], int] = lambda m: m) -> float:
    """The share of padding in the next ``n_batches`` batches of a (fresh) stream: 1 − tokens / padded tokens, each
    batch padded to ``pad_to(its longest example)``."""
    ell = np.asarray(lengths, dtype=np.int64)
    tokens = padded = 0
    for _ in range(n_batches):
        b = ell[next(batches)]
        tokens += int(b.sum())
        padded += len(b) * pad_to(int(b.max()))
    return 1.0 - tokens / padded if padded else 0.0
