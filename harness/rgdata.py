"""Reasoning-gym sets, generated once and cached as JSONL, and the harness's own scorer for them.

``reasoning_gym.create_dataset(name, seed=s, size=n, **options)`` generates item i from seed ``s + i``. A set is
cached as ``<cache_dir>/<dataset>-<hash>.jsonl`` (the hash of dataset, options, seed and size): a header line
(the set's key, the scoring rule, the reasoning-gym version), then one line per item (id, question, answer,
metadata). A run reads the cache when it holds the set, else generates it when reasoning-gym is importable
(and writes the cache), else stops naming the command that makes it. Machines that cannot install
reasoning-gym train and score from a copied cache: scoring uses :func:`score`, whose rules equal reasoning-gym's
``score_answer == 1`` for the datasets of :data:`SCORERS` and every dataset that keeps the base class's scorer
(tests/harness/test_rgdata.py checks them on saved generations).

Generate caches (on a machine with reasoning-gym)::

    python -m harness.rgdata task=gsm_symbolic [task.rg.train_size=...]   # train, dev and the forget sets
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Optional

from harness.config import ReasoningGymConfig
from harness.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: scoring rules: reasoning-gym's ``score_answer(answer, item) == 1.0`` as the harness computes it
#: exact: the answer equals the oracle string (the base class's scorer); decimal: equal as decimal numbers, commas
#: stripped (``compute_decimal_reward``); first_number: the answer's first number equals the oracle as a float
RULES = ("exact", "decimal", "first_number")

#: datasets whose scorer is not the base class's, with the rule that reproduces it
SCORERS: dict[str, str] = {"gsm_symbolic": "first_number", "chain_sum": "decimal", "products": "decimal"}

_FIRST_NUMBER = re.compile(r"\b-?\d+(?:\.\d+)?\b")


def score(rule: str, answer: Optional[str], oracle: str) -> float:
    """1.0 when ``answer`` is correct for ``oracle`` under ``rule`` (:data:`RULES`), else 0.0."""
    if answer is None or answer == "":
        return 0.0
    if rule == "first_number":
        m = _FIRST_NUMBER.search(answer)
        try:
            return float(m is not None and float(m.group(0)) == float(oracle))
        except ValueError:
            return 0.0
    if rule == "decimal":
        answer, oracle = answer.replace(",", ""), oracle.replace(",", "")
        try:
            if Decimal(answer) == Decimal(oracle):
                return 1.0
        except (InvalidOperation, ValueError):
            pass
    return float(answer == oracle)


def extract(generation: str, marker: str) -> Optional[str]:
    """The answer in a generation: the text after the last ``marker`` (when it occurs, e.g. ``####`` after a worked
    solution), else the whole generation; its first non-empty line, stripped (None: nothing)."""
    text = generation.rsplit(marker, 1)[1] if marker and marker in generation else generation
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else None


@dataclass(frozen=True)
class SetKey:
    """Which items: a dataset, its options, the first seed and the size."""

    dataset: str
    options: dict[str, Any]
    seed: int
    size: int

    def digest(self) -> str:
        blob = json.dumps({"dataset": self.dataset, "options": self.options, "seed": self.seed, "size": self.size},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def path(self, cache_dir: Path) -> Path:
        return cache_dir / f"{self.dataset}-{self.digest()}.jsonl"


@dataclass
class ItemSet:
    """Generated items (dicts with id, question, answer, metadata) and the rule that scores them."""

    key: SetKey
    items: list[dict[str, Any]]
    rule: str
    source: str


def available() -> bool:
    """Whether reasoning-gym can be imported here."""
    return importlib.util.find_spec("reasoning_gym") is not None


def check_dataset(name: str, key: str = "task.rg.dataset") -> None:
    """ConfigError when reasoning-gym (installed here) has no dataset ``name``, with close names."""
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{key}: unknown reasoning-gym dataset '{name}'{hint}; pick one of its "
                          f"{len(DATASETS)} datasets (python -c 'import reasoning_gym.factory as f; "
                          f"print(sorted(f.DATASETS))')")


def rule_for(name: str) -> str:
    """The scoring rule of dataset ``name``: :data:`SCORERS`, ``exact`` for the base class's scorer (a warning for
    a dataset whose own scorer the harness does not reproduce: exact match is then a lower bound)."""
    if name in SCORERS:
        return SCORERS[name]
    from reasoning_gym.dataset import ProceduralDataset
    from reasoning_gym.factory import DATASETS

    if DATASETS[name][0].score_answer is not ProceduralDataset.score_answer:
        log.warning("reasoning-gym dataset %s scores answers its own way; the harness scores exact string matches "
                    "(a lower bound of its score_answer == 1)", name)
    return "exact"


def generate(key: SetKey, where: str) -> list[dict[str, Any]]:
    """The items of ``key`` from reasoning-gym; ConfigError naming ``where`` for an unknown dataset or options."""
    import reasoning_gym

    check_dataset(key.dataset, f"{where}.dataset" if where == "task.rg" else where)
    try:
        ds = reasoning_gym.create_dataset(key.dataset, seed=key.seed, size=key.size, **key.options)
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        raise ConfigError(f"{where}.options: reasoning-gym rejected the options {key.options} of {key.dataset} "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fix them") from None
    out = []
    for i in range(key.size):
        e = ds[i]
        meta = json.loads(json.dumps(e.get("metadata", {}), default=str))
        out.append({"id": f"{key.dataset}/{key.seed + i}", "question": e["question"], "answer": str(e["answer"]),
                    "metadata": meta})
    return out


def _write(path: Path, header: dict[str, Any], items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(x) + "\n" for x in [header, *items]))
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable cached reasoning-gym set ({e}); delete it and generate it again "
                        f"(python -m harness.rgdata ...)") from None
    if not lines or lines[0].get("kind") != "header":
        raise DataError(f"{path}: not a cached reasoning-gym set (no header line); delete it and generate it again")
    return lines[0], lines[1:]


def load_set(key: SetKey, cache_dir: Path, where: str = "task.rg") -> ItemSet:
    """The items of ``key``: from the cache, else generated (and cached) when reasoning-gym is importable."""
    path = key.path(cache_dir)
    if path.is_file():
        header, items = _read(path)
        return ItemSet(key, items, header["rule"], str(path))
    if not available():
        raise ConfigError(f"{where}: no cached set for {key.dataset} (seed {key.seed}, size {key.size}, options "
                          f"{key.options}) in {cache_dir} and reasoning-gym is not installed here; generate it with "
                          f"python -m harness.rgdata <the same task overrides> where reasoning-gym is installed and "
                          f"copy {cache_dir} here (or set task.rg.cache_dir)")
    items = generate(key, where)
    rule = rule_for(key.dataset)
    import reasoning_gym

    header = {"kind": "header", "dataset": key.dataset, "options": key.options, "seed": key.seed, "size": key.size,
              "rule": rule, "reasoning_gym": getattr(reasoning_gym, "__version__", "unknown")}
    try:
        _write(path, header, items)
    except OSError as e:
        log.warning("could not cache the reasoning-gym set in %s (%s); using it uncached", path, e)
    return ItemSet(key, items, rule, str(path))


def target_text(item: dict[str, Any], rg: ReasoningGymConfig, marker: str) -> str:
    """What the model is trained to write: the answer, or (``target=solution``) the worked solution ending with
    ``marker`` and the answer (added when the solution does not end so). DataError when the item has no solution."""
    if rg.target == "answer":
        return item["answer"]
    solution = item["metadata"].get(rg.solution_key)
    if not isinstance(solution, str) or not solution.strip():
        raise DataError(f"task.rg.target: {item['id']} has no worked solution under metadata['{rg.solution_key}'] "
                        f"(keys: {sorted(item['metadata'])}); use task.rg.target=answer or another "
                        f"task.rg.solution_key")
    solution = solution.strip()
    if marker and marker in solution:
        return solution
    return f"{solution}\n{marker} {item['answer']}"


def task_sets(rg: ReasoningGymConfig) -> tuple[SetKey, SetKey, list[SetKey]]:
    """The keys of the train, dev and forget sets of a task (forget sets: each dataset's default options)."""
    options = dict(rg.options)
    train = SetKey(rg.dataset, options, rg.train_seed, rg.train_size)
    dev = SetKey(rg.dataset, options, rg.dev_seed, rg.dev_size)
    forget = [SetKey(name, {}, rg.forget_seed, rg.forget_size) for name in rg.forget]
    return train, dev, forget


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m harness.rgdata task=<task> [overrides]``: generate and cache the task's sets; exit 2 on bad
    input."""
    from hydra import compose, initialize_config_dir

    import harness.methods  # noqa: F401  (the methods register their config schemas)
    from harness.config import to_typed, validate
    from harness.errors import HarnessError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=argv)
        typed = to_typed({k: v for k, v in cfg.items() if k != "hydra"})
        validate(typed)
        rg = typed.task.rg
        if rg is None:
            raise ConfigError(f"task={typed.task.name}: not a reasoning-gym task; pass task=gsm_symbolic or "
                              f"task=reasoning_gym task.rg.dataset=<name>")
        if not available():
            raise ConfigError("reasoning-gym: not installed here; pip install reasoning-gym (or "
                              "pip install -e '.[rg]') on a machine where it installs")
        train, dev, forget = task_sets(rg)
        for k, where in [(train, "task.rg"), (dev, "task.rg"), *((f, "task.rg.forget") for f in forget)]:
            s = load_set(k, Path(rg.cache_dir), where)
            print(f"{s.source}: {len(s.items)} items of {k.dataset} (seeds {k.seed}..{k.seed + k.size - 1}), "
                  f"scored by rule {s.rule}")
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Hydra's override errors: one line
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
