"""Helpers shared by the fused-layer tests: one forward/backward with every gradient, and the full-size ops of
a compiled step."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
from torch import Tensor, nn


def forward_backward(model: nn.Module, x: Tensor, *, probe: Optional[Tensor] = None, mode: Any = None,
                     seed: int = 7) -> tuple[Tensor, dict[str, Tensor]]:
    """Output, and the gradients of x and of every trainable parameter for the loss Σ y·probe.

    The RNG is seeded right before the forward, so two models draw the same dropout masks; ``probe`` (shaped as
    the output) defaults to a seed-1 float64 normal cast to the output's dtype; the forward and backward run
    under the dispatch ``mode`` if one is given (the default probe is made outside it)."""
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    with mode or contextlib.nullcontext():
        y = model(x)
    if probe is None:
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with mode or contextlib.nullcontext():
        (y * probe.to(y.dtype)).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return y.detach(), {"x": x.grad.detach(), **grads}


def full_size_ops(model: nn.Module, x: Tensor, numel: int) -> list[str]:
    """The aten ops of ``model``'s compiled forward and backward graphs (AOTAutograd, no inductor) whose output
    has ``numel`` elements: the passes a compiled step makes over a (tokens × d_out) tensor."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    ops: list[str] = []

    def capture(gm: torch.fx.GraphModule, _: Any) -> Any:
        for n in gm.graph.nodes:
            val = n.meta.get("val")
            if n.op == "call_function" and isinstance(val, Tensor) and val.numel() == numel:
                ops.append(str(n.target))
        return make_boxed_func(gm.forward)

    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=capture, bw_compiler=capture))
    forward_backward(compiled, x)
    torch._dynamo.reset()
    return ops
