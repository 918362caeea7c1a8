"""AdaLoRA (Zhang et al.), through PEFT's ``AdaLoraConfig``, with the allocation made impossible to skip.

The loop calls :meth:`AdaLora.after_optimizer_step` after every ``optimizer.step()`` and before
``zero_grad()``; it runs PEFT's ``update_and_allocate`` and records the budget b(t) and the kept rank.
:meth:`AdaLora.finish` fails the run if the budget never moved although the schedule says it must.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import AdaLoraConfig, get_peft_model
from torch import nn

from harness.config import MethodConfig
from harness.errors import ConfigError, RunFailed
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import Method, trainable_parameters


@dataclass
class AdaLoraMethodConfig(MethodConfig):
    """AdaLoRA. ``tinit``/``tfinal`` below 1 are fractions of the run's optimizer steps, else steps."""

    name: str = "adalora"
    lr: float = 1e-3
    init_r: int = 12
    target_r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    tinit: float = 0.1
    tfinal: float = 0.3
    deltaT: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1


def budget_formula(step: int, *, b0: int, bT: int, total: int, tinit: int, tfinal: int) -> int:
    """b(t) of PAPERS.md in the code form: cubic decay from b(0) to b(T) between t_i and T − t_f.

    Integer truncation as both codebases do. ``step`` counts optimizer steps from 1.
    """
    if step <= tinit:
        return b0
    if step > total - tfinal:
        return bT
    frac = 1 - (step - tinit) / (total - tinit - tfinal)
    return int((b0 - bT) * frac**3 + bT)


def schedule_steps(value: float, total_steps: int) -> int:
    """A schedule length given as a fraction (< 1) of the run, or as steps (≥ 1)."""
    return int(round(value * total_steps)) if value < 1 else int(value)


@register("adalora")
class AdaLora(Method):
    """PEFT AdaLoRA; ``total_step`` is set from the run; allocation enforced and recorded."""

    config_cls = AdaLoraMethodConfig

    def __init__(self, cfg: AdaLoraMethodConfig, total_steps: int) -> None:
        super().__init__(cfg, total_steps)
        self.tinit = schedule_steps(cfg.tinit, total_steps)
        self.tfinal = schedule_steps(cfg.tfinal, total_steps)
        self.calls = 0
        self.history: list[tuple[int, int, torch.Tensor]] = []  # (step, scheduled b(t), kept rank)
        self._last_budget = 0

    @classmethod
    def validate_config(cls, cfg: AdaLoraMethodConfig) -> None:
        if cfg.target_r <= 0:
            raise ConfigError(f"method.target_r: must be a positive integer, got {cfg.target_r}")
        if cfg.init_r < cfg.target_r:
            raise ConfigError(
                f"method.target_r: the final budget ({cfg.target_r}) exceeds the initial one "
                f"(init_r={cfg.init_r}); set init_r >= target_r (the paper uses init_r ≈ 1.5·target_r)"
            )
        if cfg.alpha <= 0:
            raise ConfigError(f"method.alpha: must be > 0, got {cfg.alpha}")
        if not 0 <= cfg.dropout < 1:
            raise ConfigError(f"method.dropout: must be in [0, 1), got {cfg.dropout}")
        for key in ("tinit", "tfinal"):
            if getattr(cfg, key) < 0:
                raise ConfigError(f"method.{key}: must be >= 0 (steps, or a fraction of the run if < 1)")
        if cfg.deltaT <= 0:
            raise ConfigError(f"method.deltaT: must be a positive integer, got {cfg.deltaT}")
        for key in ("beta1", "beta2"):
            if not 0 < getattr(cfg, key) < 1:
                raise ConfigError(f"method.{key}: must be in (0, 1), got {getattr(cfg, key)}")
        if cfg.orth_reg_weight < 0:
            raise ConfigError(f"method.orth_reg_weight: must be >= 0, got {cfg.orth_reg_weight}")

    def validate_run(self) -> None:
        T, ti, tf = self.total_steps, self.tinit, self.tfinal
        if ti + tf >= T:
            raise ConfigError(
                f"method.tinit/tfinal: the AdaLoRA schedule (tinit={ti} + tfinal={tf} steps) does not fit in "
                f"the run's {T} optimizer steps; lower tinit/tfinal (fractions < 1 scale with the run) "
                f"or raise train.max_steps"
            )
        if self.cfg.deltaT > T - ti - tf:
            raise ConfigError(
                f"method.deltaT: masking every {self.cfg.deltaT} steps never happens in the budgeting phase "
                f"of {T - ti - tf} steps; lower deltaT"
            )

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...]) -> nn.Module:
        cfg = self.cfg
        peft_cfg = AdaLoraConfig(
            init_r=cfg.init_r,
            target_r=cfg.target_r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            tinit=self.tinit,
            tfinal=self.tfinal,
            deltaT=cfg.deltaT,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            orth_reg_weight=cfg.orth_reg_weight,
            total_step=self.total_steps,
            target_modules=[t.name for t in targets],
            modules_to_save=list(head),
            task_type="SEQ_CLS",
        )
        peft_model = get_peft_model(model, peft_cfg)
        self._e_params = [(n, p) for n, p in peft_model.named_parameters() if "lora_E" in n]
        return peft_model

    def loss_terms(self, outputs: Any, task_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        # PEFT adds γ·R(P, Q) to outputs.loss inside AdaLoraModel.forward (labels passed in)
        return {"adalora/orth_reg": (outputs.loss - task_loss).detach()}

    def kept_ranks(self) -> torch.Tensor:
        """Non-zero ``lora_E`` entries per adapted matrix, shape (n_matrices,), on the device."""
        return torch.stack([torch.count_nonzero(p.detach()) for _, p in self._e_params])

    def matrix_names(self) -> list[str]:
        """Module names of the adapted matrices, in the order of :meth:`kept_ranks`."""
        return [n.split(".lora_E")[0] for n, _ in self._e_params]

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)
        self.calls += 1
        budget, mask_step = model.base_model.rankallocator.budget_schedule(step)
        self._last_budget = budget
        if mask_step or step == self.total_steps - self.tfinal:
            self.history.append((step, budget, self.kept_ranks().sum()))

    def log_metrics(self, model: nn.Module) -> dict[str, float]:
        kept = float(self.kept_ranks().sum())
        return {"adalora/budget": float(self._last_budget), "adalora/kept_rank": kept}

    def finish(self, model: nn.Module) -> dict[str, Any]:
        alloc = model.base_model.rankallocator
        if self.calls == 0:
            raise RunFailed("AdaLoRA: update_and_allocate was never called; the run trained plain LoRA")
        final = self.kept_ranks().tolist()
        must_move = alloc.init_bgt > alloc.target_bgt and self.total_steps - self.tfinal > self.tinit
        if must_move and sum(final) >= alloc.init_bgt:
            raise RunFailed(
                f"AdaLoRA: the budget never moved (kept rank {sum(final)} = initial budget {alloc.init_bgt}) "
                f"although the schedule goes to {alloc.target_bgt}"
            )
        names = self.matrix_names()
        return {
            "adalora/init_budget": alloc.init_bgt,
            "adalora/target_budget": alloc.target_bgt,
            "adalora/final_kept_rank": sum(final),
            "adalora/final_ranks": dict(zip(names, final)),
            "adalora/allocation": [[s, b, int(k)] for s, b, k in self.history],
        }

    def effective_parameters(self, model: nn.Module) -> int:
        """Σ final rank·(d_in + d_out + 1) over adapted matrices + the other trained parameters."""
        eff = 0
        adapter = 0
        mods = dict(model.named_modules())
        for n, p in self._e_params:
            mod_name = n.split(".lora_E")[0]
            mod = mods[mod_name]
            base = mod.get_base_layer()
            r = int(torch.count_nonzero(p.detach()))
            eff += r * (base.in_features + base.out_features + 1)
            a = mod.lora_A[self._adapter(mod)]
            b = mod.lora_B[self._adapter(mod)]
            adapter += a.numel() + b.numel() + p.numel()
        return trainable_parameters(model) - adapter + eff

    @staticmethod
    def _adapter(mod: nn.Module) -> str:
        return next(iter(mod.lora_A.keys()))
