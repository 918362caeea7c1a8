"""Reasoning-gym sets: the harness's scorer equals reasoning-gym's, caches, seeds, shared questions, targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import rgdata
from harness.config import ReasoningGymConfig, TaskConfig
from harness.errors import ConfigError, DataError
from harness.tasks import load_task

reasoning_gym = pytest.importorskip("reasoning_gym")

#: answers a model might write, built from each item's oracle answer
VARIANTS = (lambda a: a, lambda a: f" {a}", lambda a: f"{a}.0", lambda a: f"+{a}", lambda a: f"{a} apples",
            lambda a: f"The answer is {a}", lambda a: a.replace("-", ""), lambda a: f"{a[:-1]}", lambda a: f"1,{a}",
            lambda a: f"{a},", lambda a: "", lambda a: f"0{a}", lambda a: f"{a}\n", lambda a: a.upper(),
            lambda a: f"{int(a) + 1}" if a.lstrip("-").isdigit() else a + "x", lambda a: f"{a}/1")


@pytest.mark.parametrize("dataset", sorted({*rgdata.SCORERS, "basic_arithmetic", "leg_counting", "gcd",
                                            "letter_counting", "caesar_cipher"}))
def test_score_equals_reasoning_gym_score_answer(dataset: str) -> None:
    """For every rule of SCORERS and datasets with the base scorer: score == (score_answer == 1)."""
    ds = reasoning_gym.create_dataset(dataset, seed=5, size=12)
    rule = rgdata.rule_for(dataset)
    checked = 0
    for item in ds:
        for make in VARIANTS:
            answer = make(str(item["answer"]))
            expected = float(ds.score_answer(answer, item) == 1.0)
            assert rgdata.score(rule, answer, str(item["answer"])) == expected, (dataset, answer, item["answer"])
            checked += 1
        assert rgdata.score(rule, None, str(item["answer"])) == float(ds.score_answer(None, item) == 1.0)
    assert checked == 12 * len(VARIANTS)


def test_extract_reads_after_the_marker_else_the_first_line() -> None:
    assert rgdata.extract("Let's see.\n3 + 4 = 7\n#### 7\nmore", "####") == "7"
    assert rgdata.extract("a #### 1 #### 2", "####") == "2"
    assert rgdata.extract("  42\nbecause", "####") == "42"
    assert rgdata.extract("   \n ", "####") is None and rgdata.extract("#### ", "####") is None


def test_a_set_is_cached_and_read_back_without_reasoning_gym(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = rgdata.SetKey("chain_sum", {"min_terms": 2, "max_terms": 3}, 7, 10)
    made = rgdata.load_set(key, tmp_path)
    direct = reasoning_gym.create_dataset("chain_sum", seed=7, size=10, min_terms=2, max_terms=3)
    assert [x["question"] for x in made.items] == [direct[i]["question"] for i in range(10)]
    assert made.rule == "decimal" and key.path(tmp_path).is_file()
    monkeypatch.setattr(rgdata, "available", lambda: False)  # a machine without reasoning-gym
    again = rgdata.load_set(key, tmp_path)
    assert again.items == made.items and again.rule == "decimal"
    with pytest.raises(ConfigError, match=r"task.rg: no cached set for chain_sum .* python -m harness.rgdata"):
        rgdata.load_set(rgdata.SetKey("chain_sum", {}, 8, 10), tmp_path)


def test_unknown_dataset_and_bad_options_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task.rg.dataset: unknown reasoning-gym dataset 'chain_sums' \(did you "
                                          r"mean chain_sum"):
        rgdata.load_set(rgdata.SetKey("chain_sums", {}, 0, 4), tmp_path)
    with pytest.raises(ConfigError, match=r"task.rg.options: reasoning-gym rejected the options"):
        rgdata.load_set(rgdata.SetKey("chain_sum", {"min_terms": 5, "max_terms": 2}, 0, 4), tmp_path)


def rg_task(tmp_path: Path, **kw: Any) -> TaskConfig:
    return TaskConfig(name="t", problem="causal_lm", rg=ReasoningGymConfig(cache_dir=str(tmp_path), **kw))


def test_train_questions_shared_with_dev_are_dropped(tmp_path: Path) -> None:
    """A tiny question space (two one-digit terms): disjoint seeds still repeat questions; train keeps none of dev's."""
    opts = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    data = load_task(rg_task(tmp_path, dataset="chain_sum", options=opts, train_size=300, dev_size=50))
    dev_q = {t[0] for t in data.dev.texts}
    assert data.split["shared_questions_dropped"] > 0
    assert not dev_q & {t[0] for t in data.train.texts}
    assert len(data.train) == 300 - data.split["shared_questions_dropped"]
    assert {r["id"] for r in data.dev.refs or []} == {f"chain_sum/{i}" for i in range(50)}


def test_targets_answer_or_worked_solution(tmp_path: Path) -> None:
    sol = load_task(rg_task(tmp_path, dataset="gsm_symbolic", target="solution", train_size=5, dev_size=5,
                            dev_seed=100, train_seed=0))
    for target, ref in zip(sol.train.labels, sol.train.refs or []):
        assert target.rstrip().endswith(f"#### {ref['answer']}") and len(target) > len(ref["answer"]) + 10
    ans = load_task(rg_task(tmp_path, dataset="chain_sum", train_size=5, dev_size=5, dev_seed=100, train_seed=0))
    assert list(ans.train.labels) == [r["answer"] for r in ans.train.refs or []]
    with pytest.raises(DataError, match=r"task.rg.target: chain_sum/0 has no worked solution"):
        load_task(rg_task(tmp_path, dataset="chain_sum", target="solution", train_size=5, dev_size=5, dev_seed=100,
                          train_seed=0))


def test_overlapping_seed_ranges_are_refused() -> None:
    from harness.config import RunConfig, validate
    from harness.methods.lora import LoraMethodConfig

    cfg = RunConfig(method=LoraMethodConfig(), task=rg_task(Path("."), dataset="chain_sum", train_seed=100,
                                                            train_size=50, dev_seed=120, dev_size=10))
    with pytest.raises(ConfigError, match=r"task.rg.train_seed: train seeds 100..149 overlap dev seeds 120..129"):
        validate(cfg)
