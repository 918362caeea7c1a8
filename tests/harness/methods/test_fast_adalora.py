"""The fused AdaLoRA (harness.kernels.adalora) equals PEFT's: importance averages and masks bit for bit on
the CPU through warm-up, budget phase, final mask and final phase; the orthogonality term and its gradient to
rounding; rank patterns as lists where PEFT and JSON read them; the harness's records and metrics identical;
the fused SVDLinear forward equals PEFT's to rounding and makes no float32 (tokens × d_out) tensors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import AdaLoraConfig, PeftModel, get_peft_model
from peft.tuners.adalora.layer import RankAllocator, SVDLinear
from peft.tuners.adalora.model import AdaLoraModel
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import BertConfig, BertForSequenceClassification

from benchmarks.bench_dora import OneLinear
from harness.methods.adalora import RANKS_FILE
from harness.kernels.adalora import (FusedAdaLoraModel, FusedRankAllocator, FusedSVDLinear,
                                          install_fused_adalora, rank_pattern_lists)
from harness.run import run
from tests.conftest import TINY, compose_cfg, method_args
from tests.harness.methods.layer_checks import forward_backward, full_size_ops

T, TINIT, TFINAL = 25, 4, 6  # warm-up 1..4, budget phase 5..18, final mask at 19, final phase 20..25
ADAPTED = ["query", "key", "value", "dense"]  # P shapes (6, 32) and (6, 64), Q shapes (32, 6) and (64, 6)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert() -> BertForSequenceClassification:
    """A random 2-layer BERT (hidden 32, no dropout); the same weights every call."""
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def tiny_adalora(*, fused: bool, deltaT: int = 1, gamma: float = 0.5, device: str = "cpu") -> PeftModel:
    """:func:`tiny_bert` with AdaLoRA r 6 → 3 on every linear layer; the same weights every call."""
    cfg = AdaLoraConfig(init_r=6, target_r=3, lora_alpha=8, lora_dropout=0.0, tinit=TINIT, tfinal=TFINAL,
                        deltaT=deltaT, total_step=T, orth_reg_weight=gamma, target_modules=ADAPTED,
                        task_type="SEQ_CLS")
    model = get_peft_model(tiny_bert().to(device), cfg)
    if fused:
        install_fused_adalora(model, layers=False)
    return model.train()


def batch(step: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"input_ids": torch.randint(0, 100, (4, 12), generator=g).to(device),
            "attention_mask": torch.ones(4, 12, dtype=torch.long, device=device),
            "labels": torch.randint(0, 2, (4,), generator=g).to(device)}


def lora_params(model: PeftModel, kinds: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if any(f"{k}." in n for k in kinds)}


def as_lists(pattern: dict[str, Any]) -> dict[str, list[bool]]:
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in pattern.items()}


def assert_same_state(peft_alloc: RankAllocator, fused_alloc: RankAllocator) -> None:
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        a, b = getattr(peft_alloc, key), getattr(fused_alloc, key)
        assert list(a) == list(b), key  # same names (PEFT's, without base_model.model.), same order
        for n in a:
            assert torch.equal(a[n], b[n]), (key, n)


def peft_scores(alloc: RankAllocator) -> dict[str, torch.Tensor]:
    """Per lora_E name, the (r,) triplet scores combined as PEFT's mask_to_budget does."""
    out = {}
    for n in alloc.exp_avg_ipt:
        if "lora_E" in n:
            s_a = alloc._element_score(n.replace("lora_E", "lora_A")).mean(dim=1, keepdim=True)
            s_b = alloc._element_score(n.replace("lora_E", "lora_B")).mean(dim=0).view(-1, 1)
            out[n] = alloc._combine_ipt(alloc._element_score(n), torch.cat([s_a, s_b], dim=1))
    return out


def fused_scores(alloc: FusedRankAllocator) -> dict[str, torch.Tensor]:
    return {n: s for g, sc in zip(alloc._groups, alloc._group_scores()) for n, s in zip(g.e_names, sc)}


def train_pair(deltaT: int, gamma: float, device: str = "cpu") -> tuple[PeftModel, PeftModel]:
    """PEFT's and the fused AdaLoRA trained side by side for T steps, compared after every step.

    γ = 0: the two train independently and must stay bit-identical. γ > 0: the orthogonality term (and the
    loss, and the gradient) equal PEFT's to rounding only, so the fused model takes PEFT's gradient after
    the comparison; the allocators then see the same parameters and gradients and must agree bit for bit.
    """
    ref = tiny_adalora(fused=False, deltaT=deltaT, gamma=gamma, device=device)
    fused = tiny_adalora(fused=True, deltaT=deltaT, gamma=gamma, device=device)
    assert isinstance(fused.base_model, FusedAdaLoraModel)
    assert isinstance(fused.base_model.rankallocator, FusedRankAllocator)
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2) for m in (ref, fused)]
    mask_steps = 0
    for step in range(1, T + 1):
        losses = []
        for m in (ref, fused):
            out = m(**batch(step, device))
            out.loss.backward()
            losses.append(out.loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
        grads_ref, grads_fused = lora_params(ref, ("lora_A", "lora_B", "lora_E")), lora_params(fused, ("lora_A",
                                                                                                   "lora_B", "lora_E"))
        for n, p in grads_ref.items():
            torch.testing.assert_close(grads_fused[n].grad, p.grad, rtol=1e-5, atol=1e-7)
            if gamma:
                grads_fused[n].grad.copy_(p.grad)
            else:
                assert torch.equal(grads_fused[n].grad, p.grad), n
        for m, opt in zip((ref, fused), opts):
            opt.step()
            m.base_model.update_and_allocate(step)
            opt.zero_grad()
        assert_same_state(ref.base_model.rankallocator, fused.base_model.rankallocator)
        if step < T - TFINAL:
            want, got = peft_scores(ref.base_model.rankallocator), fused_scores(fused.base_model.rankallocator)
            assert want.keys() == got.keys() and all(torch.equal(got[n], want[n]) for n in want), step
        e_ref, e_fused = lora_params(ref, ("lora_E",)), lora_params(fused, ("lora_E",))
        for n in e_ref:
            assert torch.equal(e_fused[n], e_ref[n]), (step, n)
        cfg_ref, cfg_fused = ref.peft_config["default"], fused.peft_config["default"]
        if cfg_ref.rank_pattern is not None:
            assert as_lists(cfg_fused.rank_pattern) == cfg_ref.rank_pattern, step
        mask_steps += TINIT < step <= T - TFINAL and (step % deltaT == 0 or step == T - TFINAL)
    assert mask_steps >= 5
    final = fused.peft_config["default"].rank_pattern
    assert all(isinstance(v, list) for v in final.values()), "lists from the final mask on"
    assert final == ref.peft_config["default"].rank_pattern
    kept = sum(sum(v) for v in final.values())
    assert kept == fused.base_model.rankallocator.target_bgt
    assert sum(int(torch.count_nonzero(e)) for e in lora_params(fused, ("lora_E",)).values()) == kept
    assert fused.base_model.rankallocator.ipt == {} and ref.base_model.rankallocator.ipt == {}  # reset_ipt
    return ref, fused


@pytest.mark.parametrize("deltaT", [1, 3])
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_fused_training_equals_peft(deltaT: int, gamma: float) -> None:
    ref, fused = train_pair(deltaT, gamma)
    for (n, a), (m, b) in zip(ref.named_parameters(), fused.named_parameters()):
        assert n == m and torch.equal(a, b), n


def peft_and_fused_term(model: PeftModel) -> tuple[torch.Tensor, torch.Tensor]:
    """γ·R(P, Q) from PEFT's AdaLoraModel.forward and from the fused forward, on the same parameters
    (the task model's forward replaced by a zero loss)."""
    base = model.base_model
    base.model.forward = lambda *a, **k: SimpleNamespace(loss=torch.zeros(()))
    try:
        return AdaLoraModel.forward(base).loss, FusedAdaLoraModel.forward(base).loss
    finally:
        del base.model.forward


def assert_same_term_and_gradient(model: PeftModel) -> None:
    term_peft, term_fused = peft_and_fused_term(model)
    assert term_peft.item() > 0
    torch.testing.assert_close(term_fused, term_peft, rtol=1e-6, atol=1e-7)
    params = list(lora_params(model, ("lora_A", "lora_B")).values())
    g_peft = torch.autograd.grad(term_peft, params)
    g_fused = torch.autograd.grad(term_fused, params)
    for a, b in zip(g_peft, g_fused):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)


def test_orthogonality_term_and_gradient_equal_peft(tmp_path: Path) -> None:
    """After training (P, Q far from orthogonal) and on a reloaded adapter whose matrices have different ranks
    (0 included), where the fused term groups covariances by rank."""
    _, fused = train_pair(deltaT=3, gamma=0.5)
    assert_same_term_and_gradient(fused)

    pattern = fused.peft_config["default"].rank_pattern
    first = next(iter(pattern))
    pattern[first] = [False] * len(pattern[first])  # a matrix pruned to rank 0
    fused.save_pretrained(str(tmp_path))
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path), is_trainable=True)
    install_fused_adalora(loaded)
    ranks = {p.shape[0] for p in lora_params(loaded, ("lora_E",)).values()}
    assert 0 in ranks and len(ranks) > 2
    assert_same_term_and_gradient(loaded)


def test_saved_adapter_has_peft_rank_pattern_and_reloads(tmp_path: Path) -> None:
    ref, fused = train_pair(deltaT=1, gamma=0.0)
    ref.save_pretrained(str(tmp_path / "peft"))
    fused.save_pretrained(str(tmp_path / "fused"))
    cfg = {k: json.loads((tmp_path / k / "adapter_config.json").read_text()) for k in ("peft", "fused")}
    assert cfg["fused"]["rank_pattern"] == cfg["peft"]["rank_pattern"] and cfg["fused"]["rank_pattern"]

    fused.eval()
    inputs = {k: v for k, v in batch(99).items() if k != "labels"}
    with torch.no_grad():
        want = fused(**inputs).logits
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path / "fused")).eval()
    kept = {n: p.shape[0] for n, p in lora_params(loaded, ("lora_E",)).items()}
    assert sum(kept.values()) == fused.base_model.rankallocator.target_bgt
    with torch.no_grad():
        got = loaded(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def train_steps(model: Any, steps: int) -> None:
    """``steps`` AdamW steps (lr 1e-2) with ``update_and_allocate`` after each, on the CPU."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(1, steps + 1):
        model(**batch(step)).loss.backward()
        opt.step()
        model.base_model.update_and_allocate(step)
        opt.zero_grad()


def test_budget_phase_pattern_stays_on_device_until_asked(tmp_path: Path) -> None:
    """Mid budget phase the fused pattern is tensors (no sync); rank_pattern_lists makes it PEFT's lists,
    after which save_pretrained writes it; PEFT's allocator is left as is."""
    ref, fused = tiny_adalora(fused=False), tiny_adalora(fused=True)
    for m in (ref, fused):
        train_steps(m, TINIT + 2)
    pattern = fused.peft_config["default"].rank_pattern
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.bool for v in pattern.values())
    want = ref.peft_config["default"].rank_pattern
    assert rank_pattern_lists(ref.base_model.rankallocator) is want
    assert rank_pattern_lists(fused.base_model.rankallocator) == want
    assert fused.peft_config["default"].rank_pattern == want
    fused.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())["rank_pattern"]
    assert saved == {k.replace(".default", ""): v for k, v in want.items()}


def test_fused_model_trains_without_peft_allocator_or_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if installing is a no-op: PEFT's per-parameter functions raise, the fused model still trains
    through every phase."""

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("PEFT's implementation was called")

    for name in ("update_ipt", "mask_to_budget", "mask_using_rank_pattern"):
        monkeypatch.setattr(RankAllocator, name, boom)
    monkeypatch.setattr(AdaLoraModel, "forward", boom)
    model = tiny_adalora(fused=True)
    train_steps(model, T)
    kept = sum(int(torch.count_nonzero(e)) for e in lora_params(model, ("lora_E",)).values())
    assert kept == model.base_model.rankallocator.target_bgt
    with pytest.raises(AssertionError, match="PEFT's implementation"):
        tiny_adalora(fused=False)(**batch(0))


@pytest.mark.gpu
@pytest.mark.parametrize("deltaT", [1, 3])
def test_fused_training_equals_peft_on_gpu(deltaT: int) -> None:
    """The same bit-for-bit comparison on CUDA (γ = 0: the runs are independent)."""
    train_pair(deltaT, 0.0, device="cuda")


@pytest.mark.gpu
def test_fused_allocation_adds_no_host_sync_on_gpu() -> None:
    """On CUDA the fused update_and_allocate never syncs, except at the final mask (the pattern copied to the
    host once, as PEFT's lists) and at the first step of the final phase (its masks copied to the device)."""
    model = tiny_adalora(fused=True, device="cuda")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    syncing = {T - TFINAL, T - TFINAL + 1}
    for step in range(1, T + 1):
        model(**batch(step, "cuda")).loss.backward()
        opt.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("default" if step in syncing else "error")
        try:
            model.base_model.update_and_allocate(step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        opt.zero_grad()
    kept = sum(int(torch.count_nonzero(e)) for e in lora_params(model, ("lora_E",)).values())
    assert kept == model.base_model.rankallocator.target_bgt


def test_missing_gradient_is_a_clear_error() -> None:
    model = tiny_adalora(fused=True)
    with pytest.raises(RuntimeError, match="no gradient for .* adapter parameters .*before zero_grad"):
        model.base_model.update_and_allocate(1)


def test_final_pattern_edited_in_place_is_applied() -> None:
    """mask_using_rank_pattern caches its device masks per pattern content, not per dict object."""
    _, fused = train_pair(deltaT=3, gamma=0.0)
    base = fused.base_model
    pattern = base.peft_config["default"].rank_pattern
    key = next(k for k, v in pattern.items() if any(v))
    pattern[key] = [False] * len(pattern[key])
    base.rankallocator.mask_using_rank_pattern(base.model, pattern)
    assert int(torch.count_nonzero(dict(base.model.named_parameters())[key])) == 0


# ------------------------------------------------------------------------------------------ the SVDLinear layer

D_IN, D_OUT = 24, 40


def one_svd_linear(*, fused: bool, dropout: float = 0.0) -> PeftModel:
    """AdaLoRA r = 6 on one Linear (seed 0), P, λ, Q all random and one triplet masked (λ = 0)."""
    torch.manual_seed(0)
    cfg = AdaLoraConfig(init_r=6, target_r=3, lora_alpha=8, lora_dropout=dropout, target_modules=["lin"],
                        total_step=10)
    model = get_peft_model(OneLinear(D_IN, D_OUT), cfg)
    lin = model.base_model.model.lin
    with torch.no_grad():
        for p in (lin.lora_A.default, lin.lora_E.default, lin.lora_B.default):
            p.normal_(std=0.3)
        lin.lora_E.default[2] = 0
    if fused:
        install_fused_adalora(model)
        assert type(lin) is FusedSVDLinear
    return model


@pytest.mark.parametrize("mode", ["train", "train_dropout", "eval"])
def test_svd_linear_output_and_gradients_equal_peft(mode: str) -> None:
    dropout = 0.3 if mode == "train_dropout" else 0.0
    ref, fused = (one_svd_linear(fused=f, dropout=dropout).train(mode != "eval") for f in (False, True))
    x = torch.randn(3, 5, D_IN, generator=torch.Generator().manual_seed(3))
    probe = torch.randn(3, 5, D_OUT, generator=torch.Generator().manual_seed(1))
    (y_ref, g_ref), (y_fused, g_fused) = (forward_backward(m, x, probe=probe) for m in (ref, fused))
    torch.testing.assert_close(y_fused, y_ref, rtol=1e-5, atol=1e-6)
    assert g_ref.keys() == g_fused.keys() and any("lora_E" in k for k in g_ref)
    for k in g_ref:
        torch.testing.assert_close(g_fused[k], g_ref[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def test_compiled_svd_linear_adds_the_adapter_without_copying_the_base_output() -> None:
    """Under compile the adapter product is a matmul added elementwise (inductor fuses the add into the consumer),
    not an ``addmm`` that copies the base output first."""
    fused = one_svd_linear(fused=True).train()
    ops = full_size_ops(fused, torch.randn(12, D_IN), 12 * D_OUT)
    assert ops.count("aten.addmm.default") == 1, ops  # the base layer's own x W0ᵀ + b
    assert "aten.add.Tensor" in ops and not [o for o in ops if "copy" in o], ops


class FullSizeOutputs(TorchDispatchMode):
    """Records the dtype of every op output with ``numel`` elements (the tokens × d_out tensors)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.dtypes = numel, []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                self.dtypes.append(t.dtype)
        return out


def test_svd_linear_under_bf16_autocast_stays_bf16_and_matches_peft() -> None:
    """The harness's CUDA setting on CPU (bf16 frozen W0, float32 adapters, input cast off, bf16 autocast):
    PEFT's ``/ ranknum`` makes float32 (tokens × d_out) tensors forward and backward, the fused layer none and
    fewer full-size tensors in all; output and gradients within 1% of PEFT's."""
    models = [one_svd_linear(fused=f) for f in (False, True)]
    for m in models:
        lin = m.base_model.model.lin
        lin.base_layer.to(torch.bfloat16)
        lin.cast_input_dtype_enabled = False
    x = torch.randn(64, D_IN, generator=torch.Generator().manual_seed(3)).bfloat16()
    probe = torch.randn(64, D_OUT, generator=torch.Generator().manual_seed(1)).bfloat16()
    results, modes = [], []
    for m in models:
        mode = FullSizeOutputs(64 * D_OUT)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(forward_backward(m, x, probe=probe, mode=mode))
        modes.append(mode.dtypes)
    (y_ref, g_ref), (y_fused, g_fused) = results
    assert y_ref.dtype == y_fused.dtype == torch.bfloat16
    assert torch.float32 in modes[0] and torch.float32 not in modes[1], modes
    assert len(modes[1]) < len(modes[0])

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    assert rel(y_fused, y_ref) < 1e-2
    for k in g_ref:
        assert g_fused[k].dtype == g_ref[k].dtype and rel(g_fused[k], g_ref[k]) < 1e-2, (k, rel(g_fused[k], g_ref[k]))


def test_harness_svd_linear_fused_and_merged_falls_back() -> None:
    """``install_fused_adalora`` swaps every SVDLinear (not with ``layers=False``); merged adapters take PEFT's
    forward and give the unmerged output."""
    assert not any(type(m) is FusedSVDLinear for m in tiny_adalora(fused=True).modules())  # layers=False
    model = tiny_adalora(fused=False)
    install_fused_adalora(model)
    n_svd = sum(isinstance(m, SVDLinear) for m in model.modules())
    assert n_svd and sum(type(m) is FusedSVDLinear for m in model.modules()) == n_svd
    model.eval()
    inputs = {k: v for k, v in batch(3).items() if k != "labels"}
    with torch.no_grad():
        want = model(**inputs).logits
        model.base_model.merge_adapter()
        got = model(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- the harness


def test_harness_run_fused_equals_peft(tmp_path: Path) -> None:
    """A tiny harness run with method.fused=true and =false: the same rank records, metrics and adapter.
    γ = 0 (the fused forward still runs): with γ > 0 the loss differs by rounding, and so would the runs."""
    runs = {}
    for fused in (True, False):
        cfg = compose_cfg([*TINY, *method_args("adalora"), "train.max_steps=16", "method.tinit=2",
                           "method.tfinal=4", "method.orth_reg_weight=0", f"method.fused={str(fused).lower()}",
                           "snapshot.enabled=false"])
        runs[fused] = (run(cfg, tmp_path / str(fused)), tmp_path / str(fused))
    (s_f, d_f), (s_p, d_p) = runs[True], runs[False]
    assert (d_f / RANKS_FILE).read_text() == (d_p / RANKS_FILE).read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]  # noqa: E731
    rows = {d: strip([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]) for d in (d_f, d_p)}
    assert rows[d_f] == rows[d_p]
    keys = [k for k in s_p if k.startswith(("eval/", "best/", "adalora/"))]
    assert keys and {k: s_f[k] for k in keys} == {k: s_p[k] for k in keys}
    cfg_f, cfg_p = (json.loads((d / "adapter" / "adapter_config.json").read_text()) for d in (d_f, d_p))
    assert cfg_f["rank_pattern"] == cfg_p["rank_pattern"]
