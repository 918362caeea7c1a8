"""On a CUDA device: the fused DoRA forward and the fused AdaLoRA allocator against PEFT's, under the harness's
GPU settings (bf16 frozen weights, bf16 autocast, PEFT's input casting off), and a compiled run with CUDA
graphs. Skipped without a GPU (``-m gpu`` selects them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import AdaLoraConfig, LoraConfig, get_peft_model
from peft.tuners.lora.dora import DoraLinearLayer
from transformers import BertConfig, BertForSequenceClassification

from harness.kernels.adalora import install_fused_adalora
from harness.kernels.dora import install_fused_dora
from harness.run import run

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
TARGETS = ["query", "key", "value", "dense"]


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    conf = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(conf)


def gpu_settings(model: torch.nn.Module) -> torch.nn.Module:
    """As ``harness.run.speed_up`` with bf16: frozen weights bf16, PEFT's input casting off."""
    model = model.to(CUDA)
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    for m in model.modules():
        if hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = False
    return model


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(1, 100, (8, 32), generator=g).to(CUDA),
            "attention_mask": torch.ones(8, 32, dtype=torch.long, device=CUDA),
            "labels": torch.randint(0, 2, (8,), generator=g).to(CUDA)}


def test_fused_dora_matches_peft_under_bf16_autocast() -> None:
    """Gradients of the fused DoRA under the GPU settings are as close to an fp32 reference as PEFT's are."""
    peft_model = get_peft_model(tiny_bert(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)  # B = 0 at init would make the norm trivially ||W0||
    fused, reference = copy.deepcopy(peft_model), copy.deepcopy(peft_model).to(CUDA)
    n_dora = sum(type(m) is DoraLinearLayer for m in fused.modules())
    assert install_fused_dora(fused) == n_dora > 0
    grads = {}
    for name, model, amp in (("peft", gpu_settings(peft_model), True), ("fused", gpu_settings(fused), True),
                             ("fp32", reference, False)):
        with torch.autocast(CUDA.type, dtype=torch.bfloat16, enabled=amp):
            model(**batch()).loss.backward()
        grads[name] = {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    for n, ref in grads["fp32"].items():
        err_peft, err_fused = rel(grads["peft"][n], ref), rel(grads["fused"][n], ref)
        assert err_fused <= max(2 * err_peft, 2e-2), (n, err_fused, err_peft)


def test_fused_adalora_masks_equal_peft_on_cuda() -> None:
    cfg = AdaLoraConfig(init_r=6, target_r=3, tinit=2, tfinal=4, deltaT=1, total_step=20, target_modules=TARGETS)
    peft_model = get_peft_model(tiny_bert(), cfg).to(CUDA)
    fused = copy.deepcopy(peft_model)
    install_fused_adalora(fused)
    pairs = [(p, q) for (_, p), (_, q) in zip(peft_model.named_parameters(), fused.named_parameters())]
    g = torch.Generator(device=CUDA).manual_seed(0)
    for step in range(1, 21):  # identical random gradients into both: the allocators must agree exactly
        for p, q in pairs:
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=g, device=CUDA)
                q.grad = p.grad.clone()
        peft_model.base_model.update_and_allocate(step)
        fused.base_model.update_and_allocate(step)
        for (n, p), (_, q) in zip(peft_model.named_parameters(), fused.named_parameters()):
            if "lora_E" in n:
                assert torch.equal(p, q), (step, n)


def test_compiled_run_with_cuda_graphs(tiny_cfg: Any, tmp_path: Path) -> None:
    """train.compile=model with CUDA graphs (reduce-overhead) finishes and learns like the eager run."""
    base = ["method=lora", "train.pad_to_multiple=32", "train.device=cuda", "train.max_steps=12", "method.dropout=0",
            "+model.from_config.hidden_dropout_prob=0", "+model.from_config.attention_probs_dropout_prob=0"]
    eager = run(tiny_cfg(*base), tmp_path / "eager")
    graphs = run(tiny_cfg(*base, "train.compile=model", "train.compile_mode=reduce-overhead"), tmp_path / "graphs")
    assert json.loads((tmp_path / "graphs" / "run.json").read_text())["status"] == "done"
    assert graphs["eval/loss"] == pytest.approx(eager["eval/loss"], rel=2e-2)


@pytest.mark.parametrize("method", ["full", "lora", "dora", "adalora"])
def test_graphed_run_trains_like_eager(tiny_cfg: Any, tmp_path: Path, method: str) -> None:
    """train.compile=graphs (one CUDA graph per batch shape, replayed) gives the eager run's losses (dropout off,
    fp32: no random stream or rounding to differ), captures a graph per bucket, and its record says so."""
    base = [f"method={method}", "train.device=cuda", "train.max_steps=16", "train.log_every=1", "train.bf16=false",
            "+model.from_config.hidden_dropout_prob=0", "+model.from_config.attention_probs_dropout_prob=0",
            "train.length_buckets=2", "train.batch_size=8"]
    if method != "full":
        base.append("method.dropout=0")
    if method == "adalora":
        base += ["method.deltaT=2", "method.tinit=0.1", "method.tfinal=0.1"]
    eager = run(tiny_cfg(*base, "train.compile=none"), tmp_path / "eager")
    graphed = run(tiny_cfg(*base, "train.compile=graphs"), tmp_path / "graphs")
    speed = graphed["speed"]
    assert speed["path"] == "graphs" and speed["graphs_failed"] is None and 1 <= speed["graphs"] <= 4
    assert len(speed["buckets"]) == 2 and graphed["compile_seconds"] > 0
    losses = [[json.loads(x)["train/loss"] for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
               if "train/loss" in x] for d in ("eager", "graphs")]
    assert len(losses[0]) == 16 and losses[1] == pytest.approx(losses[0], rel=1e-3, abs=1e-5)
    assert graphed["eval/loss"] == pytest.approx(eager["eval/loss"], rel=1e-3)


def test_auto_chooses_graphs_on_cuda_and_learns(tiny_cfg: Any, tmp_path: Path) -> None:
    """The default (train.compile=auto) on a GPU records CUDA graphs for a small model and trains with dropout."""
    out = run(tiny_cfg("method=lora", "train.device=cuda", "train.max_steps=12"), tmp_path / "auto")
    assert out["speed"]["path"] == "graphs" and out["speed"]["graphs"] >= 1, out["speed"]
    assert out["speed"]["reason"].startswith("auto:")
