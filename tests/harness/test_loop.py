"""The loop's state and clock: what a checkpoint holds of them, and checkpoints written before they existed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness import checkpoint as ckpt_io
from harness import loop
from harness.loop import Clock, LoopState


def _state() -> LoopState:
    s = LoopState.on(torch.device("cpu"))
    s.evaluated(5, {"accuracy": 0.7, "loss": 0.6}, {"accuracy": 0.8, "loss": 0.5}, "accuracy")
    s.evaluated(8, {"accuracy": 0.75, "loss": 0.55}, {"accuracy": 0.6, "loss": 0.7}, "accuracy")
    s.step, s.tokens, s.n_in_window = 8, 1234, 2
    s.loss_sum += 1.5
    s.tokens_dev += 77
    s.terms_sum["adalora/orth_reg"] = torch.tensor(0.25)
    return s


def test_best_is_chosen_on_validation_when_there_is_one() -> None:
    s = _state()
    assert s.best_step == 5 and s.best == {"accuracy": 0.7, "loss": 0.6} and s.best_valid["accuracy"] == 0.8
    assert s.final == {"accuracy": 0.75, "loss": 0.55}
    dev_only = LoopState.on(torch.device("cpu"))
    for step, acc in ((3, 0.6), (6, 0.9), (9, 0.8)):
        dev_only.evaluated(step, {"accuracy": acc}, {}, "accuracy")
    assert dev_only.best_step == 6 and dev_only.best == {"accuracy": 0.9} and dev_only.best_valid == {}


def test_state_survives_a_checkpoint(tmp_path: Path) -> None:
    s = _state()
    ckpt_io.save(tmp_path, s.step, {"step": s.step, "loop": {**s.state_dict(), "train_seconds": 3.0,
                                                             "window_seconds": 0.5}})
    tree = ckpt_io.latest(tmp_path).tree
    back = LoopState.on(torch.device("cpu"))
    back.load_state_dict(tree["loop"], step=tree["step"])
    for key in ("step", "best", "final", "best_valid", "final_valid", "best_step", "tokens", "n_in_window"):
        assert getattr(back, key) == getattr(s, key), key
    assert float(back.loss_sum) == 1.5 and int(back.tokens_dev) == 77
    assert float(back.terms_sum["adalora/orth_reg"]) == 0.25


def test_loop_entries_of_earlier_checkpoints_load() -> None:
    """The ``loop`` entry as the loop wrote it before LoopState (the same keys, so the format is unchanged),
    and as checkpoints from before validation splits (no best_valid / final_valid / best_step)."""
    current = {"best": {"accuracy": 0.7}, "final": {"accuracy": 0.6}, "best_valid": {"accuracy": 0.8},
               "final_valid": {"accuracy": 0.5}, "best_step": 4, "tokens": 99, "tokens_dev": torch.tensor(7),
               "loss_sum": torch.tensor(2.0), "terms_sum": {}, "n_in_window": 1, "train_seconds": 1.0,
               "window_seconds": 0.1, "initial": {}, "probes_start": {}}
    s = LoopState.on(torch.device("cpu"))
    s.load_state_dict(current, step=6)
    assert s.state_dict().keys() | {"train_seconds", "window_seconds"} == current.keys()
    assert (s.step, s.best_step, s.tokens, s.best_valid) == (6, 4, 99, {"accuracy": 0.8})
    older = {k: v for k, v in current.items()
             if k not in ("best_valid", "final_valid", "best_step", "initial", "probes_start")}
    s = LoopState.on(torch.device("cpu"))
    s.load_state_dict(older, step=6)
    assert (s.best_valid, s.final_valid, s.best_step, s.best) == ({}, {}, None, {"accuracy": 0.7})


def test_clock_leaves_evaluations_and_checkpoints_out(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    clock = Clock(train_seconds=10.0, window_seconds=1.0)  # an attempt resumed after 10 s of training
    now[0] += 2.0
    with clock.paused():  # an evaluation
        now[0] += 5.0
    now[0] += 1.0
    with clock.paused(checkpoint=True):
        now[0] += 4.0
    assert clock.train_seconds() == pytest.approx(13.0) and clock.window_seconds() == pytest.approx(4.0)
    assert (clock.checkpoints, clock.checkpoint_seconds, clock.since_checkpoint()) == (1, 4.0, 0.0)
    assert clock.state_dict() == {"train_seconds": pytest.approx(13.0), "window_seconds": pytest.approx(4.0)}
    clock.new_window()
    now[0] += 0.5
    assert clock.window_seconds() == pytest.approx(0.5)
    again = Clock.resumed(clock.state_dict())
    assert again.train_seconds() == pytest.approx(13.5) and again.window_seconds() == pytest.approx(0.5)


class _Out:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class _Linear(torch.nn.Module):
    """A model as the loop calls it: keyword batch tensors in, an object with ``logits`` out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> _Out:
        return _Out(self.lin(x).squeeze(-1))


class _Problem:
    model_loss = False

    @staticmethod
    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((logits - batch["labels"]) ** 2).mean()


class _Method:
    @staticmethod
    def loss_terms(outputs: _Out, task_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"l1": outputs.logits.detach().abs().mean()}


def _stepper(max_grad_norm: float) -> loop.Training:
    """A Training with only what :meth:`Training.device_step` uses (SGD: the update is the gradient, exactly)."""
    from types import SimpleNamespace

    t = object.__new__(loop.Training)
    t.model = t.fwd = _Linear()
    t.trainable = list(t.model.parameters())
    t.optimizer = torch.optim.SGD(t.trainable, lr=0.1)
    t.data = SimpleNamespace(problem=_Problem())
    t.method, t.autocast, t.device = _Method(), loop.contextlib.nullcontext, torch.device("cpu")
    t.cfg = SimpleNamespace(max_grad_norm=max_grad_norm)
    t.watch, t.state = loop.DivergenceWatch(t.device), LoopState.on(t.device)
    return t


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_one_step_function_accumulates_micro_batches_as_one_batch(clip: float) -> None:
    """Two micro-batches of 4 (loss / 2 each) give the loss, the method's terms, the gradient norm and the
    update of one batch of 8: the step every path runs (eager, compiled, DDP; one micro-batch in a CUDA graph)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, generator=g)
    batch = {"x": x, "attention_mask": torch.ones(8, 1, dtype=torch.long), "labels": y}
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    one, two = _stepper(clip), _stepper(clip)
    out1, out2 = one.device_step([batch]), two.device_step(halves)
    assert out2.keys() == out1.keys() == ({"loss", "term:l1"} | ({"grad_norm"} if clip else set()))
    for k in out1:
        assert float(out2[k]) == pytest.approx(float(out1[k]), rel=1e-6), k
    for a, b in zip(one.model.parameters(), two.model.parameters()):
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, _Linear().lin.weight if a.ndim == 2 else _Linear().lin.bias)  # it updated


def test_a_non_finite_loss_stops_the_cpu_step_before_the_update() -> None:
    t = _stepper(0.0)
    before = [p.detach().clone() for p in t.model.parameters()]
    bad = {"x": torch.full((2, 3), float("nan")), "attention_mask": torch.ones(2, 1, dtype=torch.long),
           "labels": torch.zeros(2)}
    with pytest.raises(loop.RunFailed, match="not finite at step 1"):
        t.device_step([bad])
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
