"""The snapshot folder's format and its math, method-agnostic: written by :mod:`harness.snapshots`, read by
``analysis.decomposition`` (which imports only this module and :mod:`harness.w0store` from the harness).

Each tracked matrix names in meta.json the **form** of its effective weight: a small vocabulary of linear-algebra
recipes rebuilding W (out, in) from W0 (the pretrained weight) and the tensors stored at a step. A method picks
its form (``Method.snapshot_view``); nothing here knows methods.

=====================  ==========================================  ===================================
form                   effective weight W                           tensors per step (shapes)
=====================  ==========================================  ===================================
``dense``              W itself                                     per-row/column summaries, ``W`` where asked
``low_rank``           W0 + s·B A                                   A (r, in), B (out, r)
``low_rank_shifted``   W0 + s·(B A − B0 A0)                         A, B, A0 (r, in), B0 (out, r)
``gated_low_rank``     W0 + s·B (A ⊙ E)   (= W0 + s·P diag(λ) Q)    A (r, in), E (r, 1), B (out, r)
``magnitude_low_rank`` m ⊙ V / ‖V‖_row,  V = W0 + s·B A             m (out,), A, B
``scaled_low_rank``    W0 + s·diag(b) B diag(d) A                   A (r, in), B (out, r), b (out,), d (r,)
=====================  ==========================================  ===================================

Snapshot folders of format ≤ 2 name no form; :func:`form_of` infers it from the stored tensor names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import Tensor

#: 3: each matrix names its rebuild ``form``; 2: W0 may live in the shared store (meta.json ``w0.store``);
#: 1: a copy of W0 in each run
FORMAT_VERSION = 3
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
#: the per-matrix summaries, in the order of :func:`summarize`'s ``stats`` columns
STATS: tuple[str, ...] = ("dM_row", "dD_row", "dM_col", "dD_col", "dW_fro", "dW_rel", "stable_rank")
#: what the ``dense`` form stores per step instead of the matrix: per-row/column norm changes and 1 − cos
DENSE_SUMMARY: tuple[str, ...] = ("row_dm", "row_dd", "col_dm", "col_dd")
POWER_BLOCK = 16
POWER_ITERS = 8

Scale = Union[float, Tensor]


def _dense(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    return t["W"]


def _low_rank(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    return w0 + (t["B"] @ t["A"]) * s


def _low_rank_shifted(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    return w0 + (t["B"] @ t["A"] - t["B0"] @ t["A0"]) * s


def _gated_low_rank(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    return w0 + (t["B"] @ (t["A"] * t["E"])) * s


def _magnitude_low_rank(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    v = _low_rank(w0, t, s)
    return (t["m"] / torch.linalg.norm(v, dim=-1)).unsqueeze(-1) * v


def _scaled_low_rank(w0: Tensor, t: Mapping[str, Tensor], s: Scale) -> Tensor:
    return w0 + ((t["b"].unsqueeze(-1) * t["B"]) @ (t["d"].unsqueeze(-1) * t["A"])) * s


@dataclass(frozen=True)
class Form:
    """One rebuild recipe.

    ``tensors``: stored per step (``dense`` stores :data:`DENSE_SUMMARY` instead, and ``W`` where asked).
    ``rank_factor``: rank(W − W0) ≤ rank_factor · r (0: no such bound), so that one subspace iteration gives
    ‖ΔW‖_2 exactly when that is ≤ :data:`POWER_BLOCK`. ``kept_rank``: the tensor whose non-zero entries are the
    rank kept at a step (otherwise the matrix's declared rank).
    """

    name: str
    tensors: tuple[str, ...]
    formula: str
    rebuild: Callable[[Tensor, Mapping[str, Tensor], Scale], Tensor]
    rank_factor: int = 1
    kept_rank: Optional[str] = None


DENSE = "dense"
FORMS: dict[str, Form] = {f.name: f for f in (
    Form(DENSE, ("W",), "W", _dense, rank_factor=0),
    Form("low_rank", ("A", "B"), "W0 + s·B@A", _low_rank),
    Form("low_rank_shifted", ("A", "B", "A0", "B0"), "W0 + s·(B@A − B0@A0)", _low_rank_shifted, rank_factor=2),
    Form("gated_low_rank", ("A", "E", "B"), "W0 + s·B@(A⊙E)", _gated_low_rank, kept_rank="E"),
    Form("magnitude_low_rank", ("m", "A", "B"), "m ⊙ V/‖V‖_row, V = W0 + s·B@A", _magnitude_low_rank, rank_factor=0),
    Form("scaled_low_rank", ("A", "B", "b", "d"), "W0 + s·diag(b)@B@diag(d)@A", _scaled_low_rank),
)}


def get_form(name: str) -> Form:
    """The form of that name; ValueError listing the known ones."""
    try:
        return FORMS[name]
    except KeyError:
        raise ValueError(f"unknown snapshot form '{name}'; known: {sorted(FORMS)}") from None


def form_of(matrix: Mapping[str, Any]) -> str:
    """The form of one meta.json matrix entry: its ``form`` (format 3), or, for folders written before forms
    existed (format ≤ 2), the form whose tensors it stored (the summaries, with or without ``W``: dense)."""
    if matrix.get("form"):
        return str(matrix["form"])
    stored = set(matrix.get("tensors") or ())
    if stored & set(DENSE_SUMMARY) or stored == {"W"}:
        return DENSE
    for f in FORMS.values():
        if f.name != DENSE and set(f.tensors) == stored:
            return f.name
    raise ValueError(f"snapshot matrix {matrix.get('name')!r}: its tensors {sorted(stored)} match no known form "
                     f"({sorted(FORMS)})")


def rebuild(form: str, w0: Tensor, t: Mapping[str, Tensor], scale: Scale) -> Tensor:
    """The effective weight (..., out, in) from W0 (..., out, in) and a step's tensors (leading dims batch).

    ``scale`` is s, a float or a tensor broadcasting against (..., out, in), e.g. (G, 1, 1) for a stack.
    """
    return get_form(form).rebuild(w0, t, scale)


def spectral_norm(delta: Tensor, *, iters: int = POWER_ITERS, block: int = POWER_BLOCK, seed: int = 0) -> Tensor:
    """Largest singular value of each matrix of ``delta`` (G, out, in) -> (G,), by subspace iteration.

    Exact (to rounding) when rank(ΔW) ≤ ``block`` (LoRA, and AdaLoRA up to r = 16); otherwise a lower bound
    that converges like (σ_{block+1}/σ_1)^(2·iters). Uses its own generator: the training RNG is untouched.
    A matrix with non-finite entries (a diverged run) gets NaN, never an error: the loop reports divergence.
    """
    G, out, inp = delta.shape
    k = min(block, out, inp)
    finite = torch.isfinite(delta).all(dim=-1).all(dim=-1)  # (G,)
    delta = torch.where(finite.view(-1, 1, 1), delta, torch.zeros((), dtype=delta.dtype, device=delta.device))
    gen = torch.Generator(device=delta.device).manual_seed(seed)
    q = torch.randn(G, inp, k, generator=gen, device=delta.device, dtype=delta.dtype)
    for _ in range(iters):
        q = torch.linalg.qr(delta @ q).Q
        q = torch.linalg.qr(delta.mT @ q).Q
    sigma = torch.linalg.svdvals(delta @ q)[..., 0]
    return torch.where(finite, sigma, torch.full_like(sigma, math.nan))


def summarize(w0: Tensor, w: Tensor, *, low_rank: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """ΔM/ΔD along rows and columns, ‖ΔW‖_F, ‖ΔW‖_F/‖W0‖_F and stable rank, for a stack of matrices.

    w0, w: (G, out, in), same dtype (float32 online, float64 offline). Returns ``stats`` (G, 7) in the order
    of :data:`STATS` and the per-row/per-column vectors ``row_dm``/``row_dd`` (G, out), ``col_dm``/``col_dd``
    (G, in): the signed change of each row's (column's) norm and its 1 − cos.
    ΔM = mean_n |‖w_n‖ − ‖w0_n‖|, ΔD = mean_n (1 − cos(w_n, w0_n)); stable rank = ‖ΔW‖_F²/‖ΔW‖_2² (0 when
    ΔW = 0). Neither loses precision to cancellation when W barely moved: ‖w_n‖ − ‖w0_n‖ is taken as
    (2·w0_n + Δ_n)·Δ_n / (‖w_n‖ + ‖w0_n‖) with Δ = w − w0, and 1 − cos as ½‖w_n/‖w_n‖ − w0_n/‖w0_n‖‖²
    (exact also where the magnitude moved much more than the direction, DoRA's case). ``low_rank``:
    rank(ΔW) ≤ :data:`POWER_BLOCK` is known, so one subspace iteration gives σ_max exactly.
    """
    tiny = torch.finfo(w.dtype).tiny
    delta = w - w0
    grow = (2 * w0 + delta) * delta  # ‖w‖² − ‖w0‖², element by element
    out = {}
    for axis, dim in (("row", -1), ("col", -2)):
        n0, n = torch.linalg.norm(w0, dim=dim, keepdim=True), torch.linalg.norm(w, dim=dim, keepdim=True)
        dm = grow.sum(dim, keepdim=True) / (n + n0).clamp_min(tiny)
        u = w / n.clamp_min(tiny) - w0 / n0.clamp_min(tiny)
        out[f"{axis}_dm"], out[f"{axis}_dd"] = dm.squeeze(dim), 0.5 * (u * u).sum(dim)
    fro = torch.linalg.norm(delta, dim=(-2, -1))
    rel = fro / torch.linalg.norm(w0, dim=(-2, -1)).clamp_min(tiny)
    sigma = spectral_norm(delta, iters=1 if low_rank else POWER_ITERS)
    stable = torch.where(fro == 0, torch.zeros_like(fro), fro**2 / sigma.clamp_min(tiny) ** 2)  # NaN stays NaN
    stats = torch.stack([out["row_dm"].abs().mean(-1), out["row_dd"].mean(-1), out["col_dm"].abs().mean(-1),
                         out["col_dd"].mean(-1), fro, rel, stable], dim=-1)
    return stats, out
