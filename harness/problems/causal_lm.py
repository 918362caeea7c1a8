"""Causal-LM generation: a chat-formatted prompt, an answer the model writes; loss on the answer tokens only;
evaluation by batched greedy generation (KV cache, left padding, stop at end-of-turn / EOS / ``max_new_tokens``),
the answer extracted and scored exactly (harness/rgdata.py), beside the answer-token loss.

The prompt is the tokenizer's chat template with a generation prompt when it has one (SmolLM2: ``<|im_start|>
user … <|im_end|> <|im_start|>assistant``), else ``Question: … Answer:``; the target is the answer text followed by
the end-of-turn token (the template's, else EOS, else SEP), so that a trained model stops by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.buckets import pad_length
from harness.errors import ConfigError
from harness.problems import register_problem
from harness.problems.base import Evaluation, ProblemType, to_device
from harness.tasks import Split

#: end-of-turn tokens of common chat templates (ChatML, Llama 3, Phi/Mistral-style); a stop token when in the vocab
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass
class LMEncoded:
    """One split, tokenized once: ``input_ids`` prompt + target tokens per example (unpadded), ``prompt_len`` the
    prompt's share of each, ``refs`` what scoring needs (id, answer, rule; None: a loss-only text sample), the
    tokenizer (decoding) and the stop tokens."""

    input_ids: list[list[int]]
    prompt_len: list[int]
    refs: Optional[list[dict[str, Any]]]
    tokenizer: Any
    stop_ids: tuple[int, ...]
    token_type_ids: None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def stop_tokens(tokenizer: Any) -> tuple[int, ...]:
    """The ids that end a turn: the chat template's end-of-turn tokens that exist, then EOS (or SEP)."""
    out: list[int] = []
    template = getattr(tokenizer, "chat_template", None) or ""
    for tok in END_OF_TURN:
        if tok in template:
            i = tokenizer.convert_tokens_to_ids(tok)
            if isinstance(i, int) and i != tokenizer.unk_token_id:
                out.append(i)
    for i in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if isinstance(i, int) and i not in out:
            out.append(i)
    if not out:
        raise ConfigError("model.tokenizer: the tokenizer has no end-of-turn, EOS or SEP token to end an answer; "
                          "use a tokenizer with an EOS token")
    return tuple(out)


def prompt_text(tokenizer: Any, question: str) -> str:
    """The question as the model sees it: the chat template with a generation prompt, else a plain format."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
    return f"Question: {question}\nAnswer: "


@register_problem("causal_lm")
class CausalLM(ProblemType):
    """``AutoModelForCausalLM`` (its own LM head, not trained by adapters); ``task.max_new_tokens`` and
    ``task.answer_marker`` through :meth:`configure`; ``context``: the model's positions (prompt + generation)."""

    auto_model = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    default_metrics = ("exact_match",)
    eval_at_start = True
    label_kind = "text"

    def __init__(self) -> None:
        self.max_new_tokens = 64
        self.marker = "####"
        self.context: Optional[int] = None
        self.dataset: Optional[str] = None  # the reasoning-gym dataset trained on (its questions: task.rg.options)

    def configure(self, task: Any, model_conf: Any) -> None:
        self.max_new_tokens = int(task.max_new_tokens)
        self.marker = str(task.answer_marker)
        rg = getattr(task, "rg", None)
        self.dataset = str(rg.dataset) if rg is not None else None
        n = getattr(model_conf, "max_position_embeddings", None)
        self.context = int(n) if isinstance(n, int) else None

    def head(self, family: Any) -> tuple[str, ...]:
        return ()

    def encode(self, split: Split, tokenizer: Any, max_length: int) -> LMEncoded:
        """Prompt + target + end-of-turn ids per example (plain text: its tokens, up to ``max_length``); ConfigError
        naming ``model.max_length`` / ``task.max_new_tokens`` when an example does not fit."""
        stops = stop_tokens(tokenizer)
        if split.plain:
            ids = [tokenizer(t[0], add_special_tokens=False)["input_ids"][:max_length] for t in split.texts]
            return LMEncoded(ids, [0] * len(ids), None, tokenizer, stops)
        prompts = tokenizer([prompt_text(tokenizer, t[0]) for t in split.texts], add_special_tokens=False)["input_ids"]
        targets = tokenizer([str(x) for x in split.labels], add_special_tokens=False)["input_ids"]
        ids = [p + t + [stops[0]] for p, t in zip(prompts, targets)]
        self._check_fits(split, prompts, ids, max_length)
        return LMEncoded(ids, [len(p) for p in prompts], split.refs, tokenizer, stops)

    def _check_fits(self, split: Split, prompts: list[list[int]], ids: list[list[int]], max_length: int) -> None:
        """Every prompt plus ``max_new_tokens`` within the model's context; every prompt + target within
        ``model.max_length``."""
        name = (lambda i: split.refs[i]["id"] if split.refs else f"example {i}")
        i = int(np.argmax([len(p) for p in prompts]))
        if self.context is not None and len(prompts[i]) >= self.context:
            raise ConfigError(
                f"{self._question_key(name(i))}: the prompt of {name(i)} is {len(prompts[i])} tokens, no shorter than "
                f"the model's context of {self.context} positions (no room for an answer); use shorter questions "
                f"(task.rg.options, a smaller difficulty) or a model with a longer context")
        if self.context is not None and len(prompts[i]) + self.max_new_tokens > self.context:
            raise ConfigError(
                f"task.max_new_tokens: the prompt of {name(i)} is {len(prompts[i])} tokens, and with "
                f"{self.max_new_tokens} new tokens it exceeds the model's context of {self.context} positions; lower "
                f"task.max_new_tokens or use shorter questions (task.rg.options, a smaller difficulty)")
        j = int(np.argmax([len(x) for x in ids]))
        if len(ids[j]) > max_length:
            limit = f" (at most the model's {self.context} positions)" if self.context else ""
            raise ConfigError(f"model.max_length: {name(j)} needs {len(ids[j])} tokens (prompt + target), more than "
                              f"model.max_length={max_length}; pass model.max_length={len(ids[j])} or more{limit}")

    def _question_key(self, example: str) -> str:
        """The key whose questions a prompt comes from: ``task.rg.options`` (the trained dataset), ``task.rg.forget``
        (a forget set, scored at its default options), ``task`` (other data)."""
        if self.dataset is None:
            return "task"
        return "task.rg.options" if example.rsplit("/", 1)[0] == self.dataset else "task.rg.forget"

    def collate(self, enc: LMEncoded, idx: np.ndarray, pad_id: int, multiple: int = 0,
                buckets: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """Right-padded input_ids, attention_mask and labels (B, L): labels are the target tokens, -100 on the
        prompt and the padding (the model shifts them by one)."""
        seqs = [enc.input_ids[i] for i in idx]
        L = _padded(max(len(s) for s in seqs), multiple, buckets)
        ids = np.full((len(seqs), L), pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), L), dtype=np.int64)
        labels = np.full((len(seqs), L), -100, dtype=np.int64)
        for j, (i, s) in enumerate(zip(idx, seqs)):
            ids[j, : len(s)] = s
            mask[j, : len(s)] = 1
            p = max(enc.prompt_len[i], 1)  # the first token is never a target: nothing precedes it
            labels[j, p : len(s)] = s[p:]
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "labels": torch.from_numpy(labels)}

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross entropy (nats per target token) of logits (B, L, V) at position t against labels (B, L) at
        t + 1, targets only."""
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                               ignore_index=-100)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, enc: LMEncoded, *, batch_size: int, pad_id: int, device: torch.device,
                 metric_names: tuple[str, ...], autocast: Callable[[], Any], pad_multiple: int = 0) -> Evaluation:
        """``loss``: nats per target token (teacher-forced); with refs, also greedy generations scored
        (``exact_match``: the share scored 1) and one row per example."""
        was_training = model.training
        model.eval()
        try:
            result = {"loss": self.target_loss(model, enc, batch_size, pad_id, device, autocast)}
            rows: list[dict[str, Any]] = []
            if enc.refs is not None:
                t0 = time.perf_counter()
                texts, n_new = self.generate(model, enc, batch_size, pad_id, device, autocast)
                seconds = time.perf_counter() - t0
                rows = score_rows(enc.refs, texts, self.marker)
                scores = np.asarray([r["score"] for r in rows], dtype=np.float64)
                if "exact_match" in metric_names:
                    result["exact_match"] = float(scores.mean())
                perf = {"generated_tokens_per_s": n_new / seconds if seconds > 0 else 0.0}
        finally:
            model.train(was_training)
        return Evaluation(result, rows, perf if enc.refs is not None else {})

    def target_loss(self, model: nn.Module, enc: LMEncoded, batch_size: int, pad_id: int, device: torch.device,
                    autocast: Callable[[], Any]) -> float:
        """Summed target-token cross entropy over the split / its number of target tokens."""
        order = np.argsort([len(s) for s in enc.input_ids], kind="stable")
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        for start in range(0, len(enc), batch_size):
            batch = to_device(self.collate(enc, order[start : start + batch_size], pad_id), device)
            labels = batch.pop("labels")
            with autocast():
                logits = model(**batch).logits
            total += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                     ignore_index=-100, reduction="sum").double()
            count += int((labels[:, 1:] != -100).sum())
        return float(total) / max(count, 1)

    def generate(self, model: nn.Module, enc: LMEncoded, batch_size: int, pad_id: int, device: torch.device,
                 autocast: Callable[[], Any]) -> tuple[list[str], int]:
        """Greedy generations (decoded, special tokens dropped) of every prompt, in the split's order, and the number
        of tokens generated. Prompts are batched by length and left-padded; generation stops at a stop token."""
        from transformers import GenerationConfig

        gen = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                               eos_token_id=list(enc.stop_ids), pad_token_id=pad_id)
        prompts = [s[: p] for s, p in zip(enc.input_ids, enc.prompt_len)]
        order = np.argsort([len(p) for p in prompts], kind="stable")
        out: list[str] = [""] * len(prompts)
        n_new = 0
        for start in range(0, len(prompts), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = left_pad([prompts[i] for i in idx], pad_id)
            with autocast():
                seq = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen)
            new = seq[:, ids.shape[1]:].cpu()
            for j, i in enumerate(idx):
                toks = _until_stop(new[j].tolist(), enc.stop_ids)
                n_new += len(toks)
                out[i] = enc.tokenizer.decode(toks, skip_special_tokens=True)
        return out, n_new

    def chance(self, labels: np.ndarray, main_metric: str) -> Optional[float]:
        """Exact match of a model that writes nothing useful: 0."""
        return 0.0 if main_metric == "exact_match" else None


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask (B, L) of token lists."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, L - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[j, L - len(s):] = 1
    return ids, mask


def _until_stop(tokens: list[int], stops: Sequence[int]) -> list[int]:
    """The generated tokens before the first stop token (padding after it dropped)."""
    for k, t in enumerate(tokens):
        if t in stops:
            return tokens[:k]
    return tokens


def score_rows(refs: list[dict[str, Any]], generations: list[str], marker: str) -> list[dict[str, Any]]:
    """One row per example: id, generation, extracted answer, the oracle answer and the score (harness/rgdata.py)."""
    from harness import rgdata

    rows = []
    for ref, text in zip(refs, generations):
        answer = rgdata.extract(text, marker)
        rows.append({"id": ref["id"], "generation": text, "extracted": answer, "answer": ref["answer"],
                     "score": rgdata.score(ref.get("rule", "exact"), answer, ref["answer"])})
    return rows


def _padded(longest: int, multiple: int, buckets: Sequence[int]) -> int:
    """The batch length: up to a bucket edge, or a multiple, or the longest example."""
    if buckets:
        return pad_length(longest, buckets, multiple or 8)
    if multiple > 0:
        return -(-longest // multiple) * multiple
    return longest
