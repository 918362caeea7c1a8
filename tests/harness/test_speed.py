"""``train.compile`` resolved (harness/speed.py): auto never compiles off CUDA, graphs a small model's short run,
compiles when the estimated saving beats the estimated compile time; explicit paths that cannot run exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.speed import (COMPILE_S_BASE, COMPILE_S_PER_LAYER, FUSION_SAVING, GPU_FLOPS, graphable_reason,
                           plan_speed)

LENGTHS = list(np.random.default_rng(0).integers(8, 60, 1000))
MINILM = dict(n_params=22_700_000, n_layers=6, batch_size=32, lengths=LENGTHS)
LLAMA_1B = dict(n_params=1_100_000_000, n_layers=22, batch_size=8, lengths=[1024] * 800)


def test_auto_is_eager_off_cuda() -> None:
    plan = plan_speed("auto", device_type="cpu", total_steps=10**6, graphable=None, **LLAMA_1B)
    assert plan.path == "eager" and plan.buckets == () and "cpu" in plan.reason


def test_auto_graphs_a_small_model_and_pads_to_buckets() -> None:
    plan = plan_speed("auto", device_type="cuda", total_steps=2000, graphable=None, **MINILM)
    assert plan.path == "graphs" and 1 <= len(plan.buckets) <= 8 and plan.buckets[-1] >= max(LENGTHS)
    assert plan.longest_length <= plan.expected_length < plan.longest_length * 1.2


def test_auto_compiles_where_the_saving_beats_the_compile_time() -> None:
    tokens = 8 * 1024
    saving_per_step = FUSION_SAVING * 6 * LLAMA_1B["n_params"] * tokens / GPU_FLOPS
    compile_s = COMPILE_S_BASE + COMPILE_S_PER_LAYER * 22  # one shape: every example has 1024 tokens
    break_even = compile_s / saving_per_step
    short = plan_speed("auto", device_type="cuda", total_steps=int(break_even * 0.9), graphable=None, **LLAMA_1B)
    long = plan_speed("auto", device_type="cuda", total_steps=int(break_even * 1.1), graphable=None, **LLAMA_1B)
    assert short.path == "graphs" and long.path == "model" and long.buckets == (1024,)
    assert long.estimate["compile_s"] == pytest.approx(compile_s)


def test_auto_without_graphs_falls_back_to_eager() -> None:
    why = graphable_reason(distributed=False, grad_accum=4, gradient_checkpointing=False)
    plan = plan_speed("auto", device_type="cuda", total_steps=100, graphable=why, **MINILM)
    assert plan.path == "eager" and "grad_accum" in plan.reason


@pytest.mark.parametrize("requested, device, why, key", [
    ("graphs", "cpu", None, "CUDA device"),
    ("graphs", "cuda", "train.grad_accum > 1", "grad_accum"),
])
def test_explicit_graphs_that_cannot_run_is_a_config_error(requested: str, device: str, why: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        plan_speed(requested, device_type=device, total_steps=10, graphable=why, **MINILM)


def test_explicit_paths_are_kept() -> None:
    assert plan_speed("none", device_type="cuda", total_steps=10, graphable=None, **MINILM).path == "eager"
    model = plan_speed("model", device_type="cpu", total_steps=10, graphable=None, n_buckets=3, **MINILM)
    assert model.path == "model" and len(model.buckets) == 3


def test_auto_keeps_a_gpu_bound_full_fine_tuning_step_eager() -> None:
    """Full FT of the 1.1B model is GPU-bound (graphs measured slower): eager; its adapters and a small
    model's full FT: graphs."""
    full = plan_speed("auto", device_type="cuda", total_steps=100, graphable=None, adapters=False, **LLAMA_1B)
    lora = plan_speed("auto", device_type="cuda", total_steps=100, graphable=None, adapters=True, **LLAMA_1B)
    small = plan_speed("auto", device_type="cuda", total_steps=100, graphable=None, adapters=False, **MINILM)
    assert (full.path, lora.path, small.path) == ("eager", "graphs", "graphs") and "GPU-bound" in full.reason
