"""LoRA (Hu et al.), through PEFT's ``LoraConfig``."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from harness.config import MethodConfig
from harness.errors import ConfigError
from harness.families import MatrixRef
from harness.methods import register
from harness.methods.base import Method, SnapshotView, peft_layer


@dataclass
class LoraMethodConfig(MethodConfig):
    """LoRA: ΔW = (alpha / r) · B A with A ∈ R^{r×in}, B ∈ R^{out×r}."""

    name: str = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def budget(self) -> int:
        return self.r


def check_lora_keys(cfg: LoraMethodConfig) -> None:
    """r > 0, alpha > 0, 0 <= dropout < 1."""
    if cfg.r <= 0:
        raise ConfigError(f"method.r: must be a positive integer, got {cfg.r}")
    if cfg.alpha <= 0:
        raise ConfigError(f"method.alpha: must be > 0, got {cfg.alpha}")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"method.dropout: must be in [0, 1), got {cfg.dropout}")


@register("lora")
class Lora(Method):
    """PEFT LoRA on the selected matrices; the task head is trained in full (``modules_to_save``)."""

    step_cost = 1.1
    rank_key = "r"
    label = "LoRA"
    color = "#1f77b4"
    marker = "o"
    order = 1
    trains = ("lora_A", "lora_B")

    config_cls = LoraMethodConfig
    use_dora = False

    @classmethod
    def validate_config(cls, cfg: LoraMethodConfig) -> None:
        check_lora_keys(cfg)

    def peft_config(self, targets: list[MatrixRef], head: tuple[str, ...], task_type: str = "SEQ_CLS") -> LoraConfig:
        """PEFT's LoraConfig of this run (subclasses add their options)."""
        cfg = self.cfg
        return LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=[t.name for t in targets],
            modules_to_save=list(head),
            use_dora=self.use_dora,
            task_type=task_type,
        )

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        return get_peft_model(model, self.peft_config(targets, head, task_type))

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """W0 + s·B A: A (r, in), B (out, r), s = alpha / r."""
        base, a = peft_layer(module, LoraLayer)
        return SnapshotView("low_rank", base, lambda: {"A": module.lora_A[a].weight.detach(),
                                                       "B": module.lora_B[a].weight.detach()},
                            scale=float(module.scaling[a]), rank=int(module.r[a]), adapter=a)
