"""VeRA (Kopiczko et al.): one pair of frozen random matrices shared by every adapted layer, and per layer two
trained scaling vectors, through PEFT's ``VeraConfig``.

ΔW = diag(b) B diag(d) A with A (r, in) and B (out, r) the shared frozen projections (PEFT slices each layer's
in/out part from matrices sized for the largest layer, drawn from ``projection_prng_key``), b (out,) trained from
zero and d (r,) trained from ``d_initial``. Trained per matrix: out + r numbers, not LoRA's r·(out + in).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import VeraConfig, get_peft_model
from peft.tuners.vera import VeraLayer
from torch import nn

from harness.config import MethodConfig
from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import Method, SnapshotView, peft_layer


@dataclass
class VeraMethodConfig(MethodConfig):
    """VeRA: ``r`` the rank of the shared projections (VeRA's r is large: its cost is r per matrix, not
    r·(out+in)), ``d_initial`` the start of d, ``projection_prng_key`` the seed of A and B, ``dropout``."""

    name: str = "vera"
    lr: float = 4e-3
    r: int = 256
    d_initial: float = 0.1
    projection_prng_key: int = 0
    dropout: float = 0.0


@register("vera")
class Vera(Method):
    """PEFT VeRA on the selected matrices; the task head is trained in full (``modules_to_save``); the shared
    projections are saved with the adapter (``save_projection``), so that it loads on its own."""

    label = "VeRA"
    color = "#8c564b"
    step_cost = 1.2  # LoRA's step plus the slicing and scaling of the shared projections
    trains = ("vera_lambda_b", "vera_lambda_d")
    config_cls = VeraMethodConfig

    @classmethod
    def validate_config(cls, cfg: VeraMethodConfig) -> None:
        if cfg.r <= 0:
            raise ConfigError(f"method.r: must be a positive integer, got {cfg.r}")
        if not 0 <= cfg.dropout < 1:
            raise ConfigError(f"method.dropout: must be in [0, 1), got {cfg.dropout}")
        if cfg.projection_prng_key < 0:
            raise ConfigError(f"method.projection_prng_key: must be >= 0 (a seed), got {cfg.projection_prng_key}")

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        cfg = self.cfg
        peft_cfg = VeraConfig(
            r=cfg.r,
            d_initial=cfg.d_initial,
            projection_prng_key=cfg.projection_prng_key,
            vera_dropout=cfg.dropout,
            save_projection=True,
            target_modules=[t.name for t in targets],
            modules_to_save=list(head),
            task_type=task_type,
        )
        return get_peft_model(model, peft_cfg)

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """W0 + diag(b) B diag(d) A: A (r, in), B (out, r) this layer's slices of the shared projections, b (out,),
        d (r,)."""
        base, a = peft_layer(module, VeraLayer)
        n_in, n_out = base.in_features, base.out_features
        return SnapshotView(
            "scaled_low_rank", base,
            lambda: {"A": module.vera_A[a][:, :n_in], "B": module.vera_B[a][:n_out, :],
                     "b": module.vera_lambda_b[a].detach(), "d": module.vera_lambda_d[a].detach()},
            scale=1.0, rank=int(module.r[a]), adapter=a)
