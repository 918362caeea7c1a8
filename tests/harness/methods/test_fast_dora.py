"""The harness's fused DoRA forward (harness/kernels/dora.py) against PEFT's own, on tiny CPU models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.dora import DoraLinearLayer
from torch import Tensor, nn
from transformers import BertConfig, BertForSequenceClassification
from transformers.pytorch_utils import Conv1D

from harness.errors import ConfigError
from harness.families import family_for, resolve_targets
from harness.methods import get_method
from harness.methods.dora import DoraMethodConfig
from harness.kernels.dora import FusedDoraLinearLayer, factored_row_norm, install_fused_dora, w0_row_sq
from tests.harness.methods.layer_checks import forward_backward, full_size_ops

D_IN, D_OUT, R, ALPHA = 24, 40, 4, 8
TOL = {"atol": 1e-5, "rtol": 1e-5}


class OneLinear(nn.Module):
    """A single adapted matrix: ``nn.Linear`` or, with ``conv1d``, transformers' Conv1D (weight (d_in, d_out))."""

    def __init__(self, bias: bool, conv1d: bool = False) -> None:
        super().__init__()
        self.lin = Conv1D(D_OUT, D_IN) if conv1d else nn.Linear(D_IN, D_OUT, bias=bias)
        if conv1d:
            nn.init.normal_(self.lin.weight, std=0.2)
            nn.init.normal_(self.lin.bias, std=0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


def one_linear_dora(*, bias: bool = True, dropout: float = 0.0, conv1d: bool = False, fused: bool,
                    keep_base: bool = False) -> nn.Module:
    """PEFT DoRA on :class:`OneLinear` (seed 0), with a random B and a perturbed magnitude; ``fused`` installs
    (``keep_base``: the variant that keeps W0 x for the magnitude's gradient)."""
    torch.manual_seed(0)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=dropout, target_modules=["lin"], use_dora=True,
                     fan_in_fan_out=conv1d)
    model = get_peft_model(OneLinear(bias, conv1d), cfg)
    layer = model.base_model.model.lin
    with torch.no_grad():
        layer.lora_B.default.weight.normal_(std=0.1)  # PEFT starts B at 0: the norm would be ||W0|| trivially
        layer.lora_magnitude_vector.default.weight.mul_(1 + 0.2 * torch.randn(D_OUT))
    if fused:
        assert install_fused_dora(model, keep_base_output=keep_base) == 1
    return model


def assert_same(a: tuple[Tensor, dict[str, Tensor]], b: tuple[Tensor, dict[str, Tensor]]) -> None:
    """Outputs and every gradient (x, A, B, m, ...) of :func:`forward_backward` equal within 1e-5."""
    torch.testing.assert_close(a[0], b[0], **TOL)
    assert a[1].keys() == b[1].keys() and any("lora_magnitude_vector" in k for k in a[1])
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], **TOL, msg=lambda m, k=k: f"grad of {k}: {m}")


def x_in(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(dtype)


@pytest.mark.parametrize("keep_base", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", ["train", "train_dropout", "eval"])
def test_linear_output_and_grads_match_peft(bias: bool, mode: str, keep_base: bool) -> None:
    dropout = 0.3 if mode == "train_dropout" else 0.0
    ref, fused = (one_linear_dora(bias=bias, dropout=dropout, fused=f, keep_base=keep_base) for f in (False, True))
    for m in (ref, fused):
        m.train(mode != "eval")
    x = x_in(3, 5, D_IN)
    assert_same(forward_backward(ref, x), forward_backward(fused, x))


@pytest.mark.parametrize("keep_base", [False, True])
@pytest.mark.parametrize("mode", ["train", "train_dropout"])
def test_trainable_bias_gets_peft_gradient(mode: str, keep_base: bool) -> None:
    """PEFT's ``bias="all"`` leaves the base bias trainable: its gradient through (1 − g)·b must match."""
    dropout = 0.3 if mode == "train_dropout" else 0.0
    ref, fused = (one_linear_dora(dropout=dropout, fused=f, keep_base=keep_base) for f in (False, True))
    for m in (ref, fused):
        m.base_model.model.lin.base_layer.bias.requires_grad_(True)
    x = x_in(3, 5, D_IN)
    got, want = forward_backward(fused, x), forward_backward(ref, x)
    assert_same(want, got)
    assert "base_model.model.lin.base_layer.bias" in got[1]


def saved_numels(model: nn.Module, x: Tensor) -> list[int]:
    """numel of every tensor autograd saves for the backward of ``model(x)``."""
    sizes: list[int] = []

    def pack(t: Tensor) -> Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.requires_grad_(True))
    return sizes


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_backward_keeps_nothing_of_size_tokens_by_d_out(dropout: float) -> None:
    """The magnitude's gradient comes from gyᵀ x (d_out×d_in) in the backward: no (tokens × d_out) activation
    is stored (PEFT stores W0 x), so DoRA's activation memory is LoRA's."""
    tokens = 64
    ref, fused = (one_linear_dora(dropout=dropout, fused=f).train() for f in (False, True))
    x = x_in(tokens, D_IN)
    assert max(saved_numels(ref, x.clone())) >= tokens * D_OUT  # PEFT's (the test can fail)
    assert max(saved_numels(fused, x.clone())) < tokens * D_OUT
    kept = one_linear_dora(dropout=dropout, fused=True, keep_base=True).train()
    assert max(saved_numels(kept, x.clone())) == tokens * D_OUT  # keep_base_output: W0 x, one per layer


def test_keep_base_output_needs_fused() -> None:
    with pytest.raises(ConfigError, match="method.keep_base_output=true needs method.fused=true"):
        get_method("dora").validate_config(DoraMethodConfig(fused=False, keep_base_output=True))


@pytest.mark.parametrize("mode", ["train", "train_dropout", "eval"])
def test_fan_in_fan_out_conv1d_matches_peft(mode: str) -> None:
    dropout = 0.3 if mode == "train_dropout" else 0.0
    ref, fused = (one_linear_dora(conv1d=True, dropout=dropout, fused=f) for f in (False, True))
    assert fused.base_model.model.lin.lora_magnitude_vector.default.fan_in_fan_out
    for m in (ref, fused):
        m.train(mode != "eval")
    x = x_in(6, D_IN)
    assert_same(forward_backward(ref, x), forward_backward(fused, x))


def test_changed_base_weight_invalidates_the_cached_row_norms() -> None:
    ref, fused = (one_linear_dora(fused=f).eval() for f in (False, True))
    x = x_in(4, D_IN)
    assert_same(forward_backward(ref, x), forward_backward(fused, x))
    for m in (ref, fused):
        with torch.no_grad():
            m.base_model.model.lin.base_layer.weight.mul_(1.5)
    assert_same(forward_backward(ref, x), forward_backward(fused, x))


@pytest.mark.parametrize("transposed", [False, True])
def test_factored_norm_float64_equals_brute_force(transposed: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(D_OUT, D_IN, generator=g, dtype=torch.float64)
    a = torch.randn(R, D_IN, generator=g, dtype=torch.float64)
    b = torch.randn(D_OUT, R, generator=g, dtype=torch.float64)
    s = 1.7
    view = w0.T.contiguous().T if transposed else w0  # fan_in_fan_out passes a transposed view
    got = factored_row_norm(view, a, b, s, w0_row_sq(view))
    expected = np.linalg.norm(w0.numpy() + s * b.numpy() @ a.numpy(), axis=1)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


def float64_reference(model: nn.Module, x: Tensor) -> Tensor:
    """PEFT's DoRA forward of ``model``'s (low-precision) weights evaluated in float64."""
    ref = get_peft_model(OneLinear(True), model.peft_config["default"]).double().eval()
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    with torch.no_grad():
        return ref(x.double())


def test_bf16_fused_error_no_larger_than_peft() -> None:
    """All-bf16 model and input: PEFT takes the row norms in bf16, the fused layer in float32; measured
    against float64 on the same bf16 weights, the fused output's RMS error must not exceed PEFT's."""
    ref, fused = (one_linear_dora(fused=f).to(torch.bfloat16).eval() for f in (False, True))
    x = x_in(64, D_IN, dtype=torch.bfloat16)
    exact = float64_reference(ref, x)
    with torch.no_grad():
        y_ref, y_fused = ref(x), fused(x)
    assert y_ref.dtype == y_fused.dtype == torch.bfloat16

    def rms(y: Tensor) -> float:
        return (y.double() - exact).square().mean().sqrt().item()

    assert rms(y_fused) <= rms(y_ref), (rms(y_fused), rms(y_ref))
    # the norms themselves: float32 accuracy versus PEFT's bf16
    layer = fused.base_model.model.lin
    w0, a, b = layer.base_layer.weight, layer.lora_A.default.weight, layer.lora_B.default.weight
    exact_norm = torch.linalg.norm(w0.double() + layer.scaling["default"] * b.double() @ a.double(), dim=1)
    ours = factored_row_norm(w0, a, b, layer.scaling["default"], w0_row_sq(w0))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), exact_norm, rtol=1e-6, atol=0)


def rel_err(got: Tensor, want: Tensor) -> float:
    """||got − want|| / ||want|| (Frobenius), in float64."""
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def test_cpu_autocast_with_bf16_frozen_weights_matches_peft() -> None:
    """The harness's CUDA setting mirrored on CPU: bf16 frozen W0, fp32 adapters, bf16 inputs not cast to the
    adapter dtype, bf16 autocast. Same output dtype as PEFT; output and every gradient within 1% (relative,
    Frobenius) of PEFT's and of float64 (PEFT's own error is about 0.5%: bf16 matmuls)."""
    ref, fused, exact = (one_linear_dora(dropout=0.1, fused=f) for f in (False, True, False))
    for m in (ref, fused):
        lin = m.base_model.model.lin
        lin.base_layer.weight.data = lin.base_layer.weight.data.bfloat16()
        lin.cast_input_dtype_enabled = False
    exact.double().base_model.model.lin.base_layer.weight.data = ref.base_model.model.lin.base_layer.weight.double()
    x = x_in(16, D_IN, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, out_fused = forward_backward(ref, x), forward_backward(fused, x)
    out_exact = forward_backward(exact, x.double())
    assert out_ref[0].dtype == out_fused[0].dtype == torch.bfloat16
    for k in ["y", *out_ref[1]]:
        got, peft, want = ((o[0] if k == "y" else o[1][k]) for o in (out_fused, out_ref, out_exact))
        assert got.dtype == peft.dtype, k
        assert rel_err(got, peft) < 1e-2 and rel_err(got, want) < 1e-2, (k, rel_err(got, peft), rel_err(got, want))


def test_unsupported_base_weight_falls_back_to_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base weight of a tensor subclass (as quantized ones are) takes PEFT's forward."""

    class Wrapped(nn.Parameter):
        pass

    ref, fused = (one_linear_dora(fused=f).eval() for f in (False, True))
    base = fused.base_model.model.lin.base_layer
    base.weight = Wrapped(base.weight.detach(), requires_grad=False)
    calls: list[int] = []
    original = DoraLinearLayer.get_lora_weight
    monkeypatch.setattr(DoraLinearLayer, "get_lora_weight",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    x = x_in(4, D_IN)
    assert_same(forward_backward(ref, x), forward_backward(fused, x))
    assert calls


def test_torch_compile_traces_without_graph_breaks_and_matches_peft() -> None:
    """``train.compile``: under dynamo the W0 row norms are recomputed (no Python cache), in one graph."""
    ref, fused = (one_linear_dora(dropout=0.3, fused=f) for f in (False, True))
    x = x_in(4, D_IN)
    assert torch._dynamo.explain(fused)(x).graph_break_count == 0
    fused.compile(backend="aot_eager")
    assert_same(forward_backward(ref, x), forward_backward(fused, x))
    torch._dynamo.reset()


@pytest.mark.parametrize("bias", [False, True])
def test_compiled_graph_accumulates_the_adapter_without_copying_the_output(bias: bool) -> None:
    """Under compile the adapter product is a matmul added elementwise (inductor fuses the add into the g-scaling
    pass), not an ``addmm`` that copies the base output first, and nothing is copied in place."""
    fused = one_linear_dora(bias=bias, fused=True).train()
    x = x_in(12, D_IN)
    ops = full_size_ops(fused, x, 12 * D_OUT)
    assert ops.count("aten.addmm.default") == int(bias), ops  # the base layer's own x W0ᵀ + b
    assert "aten.add.Tensor" in ops and not [o for o in ops if "addmm_" in o or "copy" in o], ops


@pytest.mark.gpu
def test_w0_at_on_cuda_bf16_is_float32_accurate() -> None:
    """W0 Aᵀ for a bf16 W0 on CUDA (split A, bf16 matmul with a float32 output) is within float32 accumulation
    error of the float64 product (measured on an H200: 1.0e-6 relative, the float32 matmul 2.1e-7); A rounded
    to bf16 alone is >100× further off."""
    from harness.kernels.dora import _w0_at

    g = torch.Generator(device="cuda").manual_seed(0)
    w0 = torch.randn(2048, 1024, device="cuda", generator=g).bfloat16()
    a = torch.randn(16, 1024, device="cuda", generator=g) * 0.01
    exact = w0.double() @ a.double().T
    got = _w0_at(w0, a)
    assert got.dtype == torch.float32 and got.shape == (2048, 16)

    def rel(t: Tensor) -> float:
        return ((t.double() - exact).norm() / exact.norm()).item()

    assert rel(got) < 1e-5, (rel(got), rel(w0.float() @ a.T))
    assert rel(torch.mm(w0, a.bfloat16().T, out_dtype=torch.float32)) > 100 * max(rel(got), 1e-9)


# ---- tiny BERT through the harness's DoRA method ----------------------------------------------------------

TINY_BERT = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       vocab_size=100, num_labels=2)
TARGETS = ["query", "key", "value", "dense"]


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    return BertForSequenceClassification(TINY_BERT)


def tiny_bert_dora(fused: bool, keep_base: Any = False) -> nn.Module:
    """The harness's DoRA method on a seed-0 tiny BERT (dropout 0.1, so training recomputes W0 x)."""
    model = tiny_bert()
    fam = family_for("bert")
    cfg = DoraMethodConfig(r=4, alpha=8, dropout=0.1, targets=TARGETS, fused=fused, keep_base_output=keep_base)
    method = get_method("dora")(cfg, total_steps=3)
    torch.manual_seed(1)
    return method.wrap(model, resolve_targets(model, fam, TARGETS), fam.head)


def batch() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(5)
    return {"input_ids": torch.randint(1, 100, (4, 10), generator=g), "attention_mask": torch.ones(4, 10).long(),
            "labels": torch.tensor([0, 1, 1, 0])}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    """One AdamW step (dropout masks seeded); the logits and gradients it took."""
    torch.manual_seed(seed)
    out = model(**batch())
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    opt.zero_grad()
    return out.logits.detach(), grads


def eval_logits(model: nn.Module) -> Tensor:
    model.eval()
    with torch.no_grad():
        b = batch()
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


N_DORA = TINY_BERT.num_hidden_layers * 6  # query, key, value, attention.output.dense, intermediate, output


def test_method_installs_fused_layers_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="harness.methods.dora"):
        model = tiny_bert_dora(fused=True)
    kinds = [type(m) for m in model.modules() if isinstance(m, DoraLinearLayer)]
    assert kinds == [FusedDoraLinearLayer] * N_DORA
    assert f"on {N_DORA} Linear layers" in caplog.text
    assert not any(type(m) is FusedDoraLinearLayer for m in tiny_bert_dora(fused=False).modules())
    assert install_fused_dora(model) == 0  # already installed
    assert not any(m.keep_base_output for m in model.modules() if isinstance(m, FusedDoraLinearLayer))
    kept = tiny_bert_dora(fused=True, keep_base=True)
    assert all(m.keep_base_output for m in kept.modules() if isinstance(m, FusedDoraLinearLayer))


def kept_by_name(model: nn.Module) -> dict[str, bool]:
    """Adapted layer (name after ``encoder.``) → whether its DoRA layer keeps W0 x."""
    return {n.split("encoder.")[1].rsplit(".lora_magnitude_vector", 1)[0]: m.keep_base_output
            for n, m in model.named_modules() if isinstance(m, FusedDoraLinearLayer)}


def test_keep_base_output_by_matrix_type_or_name_suffix(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="harness.methods.dora"):
        kept = kept_by_name(tiny_bert_dora(fused=True, keep_base=["Wf2", "attention.self.key"]))
    assert len(kept) == N_DORA and "W0·x kept for the magnitude's gradient on 4" in caplog.text
    assert sorted(n for n, k in kept.items() if k) == [
        "layer.0.attention.self.key", "layer.0.output.dense", "layer.1.attention.self.key", "layer.1.output.dense"]
    with pytest.raises(ConfigError, match="method.keep_base_output: 'gate_proj' matches none of the adapted"):
        tiny_bert_dora(fused=True, keep_base=["Wq", "gate_proj"])


@pytest.mark.parametrize("keep", ["yes", 1, [], ["Wq", 2]])
def test_keep_base_output_rejects_what_is_not_a_bool_or_names(keep: Any) -> None:
    with pytest.raises(ConfigError, match="method.keep_base_output: expected true, false or a list"):
        get_method("dora").validate_config(DoraMethodConfig(keep_base_output=keep))


def test_keep_base_output_types_must_be_adapted() -> None:
    with pytest.raises(ConfigError, match=r"method.keep_base_output: \['Wf1'\] not among method.targets"):
        get_method("dora").validate_config(DoraMethodConfig(targets=["Wq", "Wv"], keep_base_output=["Wq", "Wf1"]))
    with pytest.raises(ConfigError, match="keep_base_output=true needs method.fused=true"):
        get_method("dora").validate_config(DoraMethodConfig(fused=False, keep_base_output=["Wq"]))


def test_keep_base_output_list_from_the_command_line() -> None:
    from harness.config import to_typed
    from tests.conftest import compose_cfg

    typed = to_typed(compose_cfg(["method=dora", "method.keep_base_output=[Wf2,Wq]"]))
    assert typed.method.keep_base_output == ["Wf2", "Wq"]
    assert to_typed(compose_cfg(["method=dora", "method.keep_base_output=true"])).method.keep_base_output is True


@pytest.mark.parametrize("keep_base", [False, True, ["Wf2", "Wq"]])
def test_tiny_bert_three_adamw_steps_match_peft_either_way(keep_base: Any) -> None:
    ref, fused = tiny_bert_dora(fused=False).train(), tiny_bert_dora(fused=True, keep_base=keep_base).train()
    opt_ref, opt_fused = adamw(ref), adamw(fused)
    for step in range(3):
        assert_same(train_step(ref, opt_ref, step), train_step(fused, opt_fused, step))
    torch.testing.assert_close(eval_logits(ref), eval_logits(fused), **TOL)


def test_fused_training_forward_never_materialises_the_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("get_lora_weight called: the d_out×d_in matrix was materialised")

    fused, ref = tiny_bert_dora(fused=True).train(), tiny_bert_dora(fused=False).train()
    monkeypatch.setattr(DoraLinearLayer, "get_lora_weight", refuse)  # (creating the layers calls both)
    monkeypatch.setattr(DoraLinearLayer, "get_weight_norm", refuse)
    fused(**batch()).loss.backward()
    with pytest.raises(AssertionError, match="materialised"):
        ref(**batch())


def adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)


def test_tiny_bert_save_reload_and_merge(tmp_path: Path) -> None:
    fused = tiny_bert_dora(fused=True).train()
    opt = adamw(fused)
    for step in range(3):
        train_step(fused, opt, step)
    logits = eval_logits(fused)
    fused.save_pretrained(str(tmp_path))
    reloaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path))
    torch.testing.assert_close(eval_logits(reloaded), logits, **TOL)  # PEFT's own forward
    assert install_fused_dora(reloaded) == N_DORA
    torch.testing.assert_close(eval_logits(reloaded), logits, **TOL)
    torch.testing.assert_close(eval_logits(fused.merge_and_unload()), logits, **TOL)
