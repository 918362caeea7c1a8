"""One test matrix over every registered method: wrap, count parameters in closed form, train a step."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config import to_typed
from harness.methods import METHODS, get_method
from harness.errors import ConfigError
from harness.models import load_model
from harness.run import plan
from tests.conftest import TINY, compose_cfg, method_args

H, I, L, V, P, C = 32, 64, 2, 30522, 256, 2  # tiny_bert: hidden, intermediate, layers, vocab, positions, labels


def bert_params() -> int:
    """Closed-form parameter count of BertForSequenceClassification (tiny_bert)."""
    emb = V * H + P * H + 2 * H + 2 * H
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    return emb + L * layer + (H * H + H) + (H * C + C)


def shapes() -> list[tuple[int, int]]:
    """(in, out) of the six adapted matrices of one layer."""
    return [(H, H)] * 4 + [(H, I), (I, H)]


HEAD = H * C + C


def expected(method: str, r: int) -> int:
    """Closed-form trained parameters at budget ``r`` (VeRA: ``r`` is the shared projections' rank)."""
    if method == "full":
        return bert_params()
    if method in ("lora", "pissa"):
        return L * sum(r * (i + o) for i, o in shapes()) + HEAD
    if method == "vera":
        return L * sum(o + r for _, o in shapes()) + HEAD
    if method == "dora":
        return L * sum(r * (i + o) + o for i, o in shapes()) + HEAD
    if method == "adalora":
        r0 = math.ceil(1.5 * r)
        return L * sum(r0 * (i + o) + r0 for i, o in shapes()) + HEAD
    raise AssertionError(method)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("budget", [2, 4])
def test_trainable_parameters_closed_form(method: str, budget: int) -> None:
    p = plan(compose_cfg([*TINY, *method_args(method), f"budget={budget}"]))
    model = p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head)
    n = sum(t.numel() for t in model.parameters() if t.requires_grad)
    assert n == p.method.trained_parameters(model) == expected(method, p.cfg.method.r if method == "vera" else budget)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_step_trains_adapter_and_head_only(method: str) -> None:
    p = plan(compose_cfg([*TINY, *method_args(method)]))
    torch.manual_seed(0)
    model = p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head)
    before = {n: t.detach().clone() for n, t in model.named_parameters()}
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    batch = {"input_ids": torch.randint(5, 1000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    for _ in range(2):  # LoRA's B starts at 0: A moves only from the second step
        model(**batch).loss.backward()
        opt.step()
        p.method.after_optimizer_step(model, 1)
        opt.zero_grad()
    changed = {n for n, t in model.named_parameters() if not torch.equal(t, before[n])}
    head = [n for n in changed if "classifier" in n]
    assert head, "the classifier head must be trained in every method"
    trains = METHODS[method].trains
    assert trains, f"{method}: declare the parameters it trains (Method.trains)"
    if method == "full":
        assert trains == ("",) and any("attention.self.query.weight" in n for n in changed)
    else:
        assert all(any(k in n for k in trains) or ("classifier" in n) for n in changed), sorted(changed)
        for k in trains:  # each declared kind of parameter moved (AdaLoRA's E after its first mask too)
            assert any(k in n for n in changed), (k, sorted(changed))


def test_registry_refuses_duplicates_and_suggests() -> None:
    from harness.methods import register

    with pytest.raises(ValueError, match="already registered"):
        register("lora")(type("X", (), {}))
    with pytest.raises(ConfigError, match="did you mean dora"):
        get_method("dorra")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_config_file(method: str) -> None:
    typed = to_typed(compose_cfg([f"method={method}"]))
    assert isinstance(typed.method, METHODS[method].config_cls)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_label_and_a_colour(method: str) -> None:
    import matplotlib.colors

    cls = METHODS[method]
    assert cls.label and matplotlib.colors.is_color_like(cls.color)
    assert len({m.color for m in METHODS.values()}) == len(METHODS)  # told apart in plots
