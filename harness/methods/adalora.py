"""AdaLoRA (Zhang et al.), through PEFT's ``AdaLoraConfig``, with the allocation made impossible to skip.

The loop calls :meth:`AdaLora.after_optimizer_step` after every ``optimizer.step()`` and before
``zero_grad()``; it runs PEFT's ``update_and_allocate`` and records, at every allocation step, the budget
b(t) of the schedule and the rank of every adapted matrix (non-zero ``lora_E`` entries).

Recording never syncs the device in the hot path: the per-matrix ranks stay on the device until the next
logging step (``log_metrics``), where they are copied in one transfer, checked against the schedule and
appended to ``adalora_ranks.jsonl`` in the run folder (one header line naming the matrices, then one line per
recorded step). A run fails with a clear reason when a mask step kept more triplets than the schedule
allows (``update_and_allocate`` not called, or not masking), and at the end when the budget never moved.

A triplet pruned at a mask step can come back: PEFT zeroes λ but P and Q keep training, and the next
optimizer step moves λ off zero. A matrix's rank is therefore only defined right after masking, which
is when it is recorded: the mask steps of the budget phase (every ``deltaT`` steps), the final mask at
T − t_f, and the last step (the final mask is re-applied at every step of the final phase).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from omegaconf import OmegaConf
from peft import AdaLoraConfig, get_peft_model
from peft.tuners.adalora import AdaLoraLayer
from torch import nn

from harness.config import MethodConfig
from harness.errors import ConfigError, RunFailed
from harness.families import MatrixRef
from harness.kernels import fast_path_available
from harness.methods import register
from harness.methods.base import Method, SnapshotView, peft_layer, trainable_parameters
from harness.record import write_bytes_atomic
from harness.schedules import budget_formula

log = logging.getLogger(__name__)

RANKS_FILE = "adalora_ranks.jsonl"
SCORES_DIR = "adalora_scores"
_PEFT_PREFIX = "base_model.model."


@dataclass
class AdaLoraMethodConfig(MethodConfig):
    """AdaLoRA. ``tinit``/``tfinal`` below 1 are fractions of the run's optimizer steps, else steps.

    ``scores_every`` > 0 saves the triplet importance scores every that many steps of the budget phase
    (``adalora_scores/step_XXXXXXX.safetensors``, one (init_r,) vector per matrix), for inspection.

    ``fused`` (default) runs the harness's own allocator and orthogonality term
    (:mod:`harness.kernels.adalora`: a few multi-tensor kernels per step, no host sync while masking),
    equivalent to PEFT's within the tests (masks and importance averages bit-identical on the CPU and an H200,
    the loss equal to rounding); false runs PEFT's own.
    """

    hash_neutral_defaults: ClassVar[dict[str, Any]] = {"match": "rank", "scaling": "peft"}  # added later

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
    scores_every: int = 0
    fused: bool = True
    match: str = "rank"  # rank | params: how init_r/target_r follow the budget (conf/method/adalora.yaml)
    scaling: str = "peft"  # peft | lora: see :func:`peft_alpha`

    def budget(self) -> int:
        return matched_lora_r(self)


#: AdaLoRA budget matching (``method.match``): ``rank`` matches LoRA's r = budget by the final rank,
#: ``params`` by the trained parameters
ADALORA_MATCH = ("rank", "params")


def adalora_ranks(budget: Any, match: Any) -> tuple[int, int]:
    """(init_r, target_r) of AdaLoRA matched with LoRA at r = ``budget``.

    ``rank``: target_r = budget, init_r = ⌈1.5·budget⌉ (the paper's b(0) ≈ 1.5·b(T); ~1.5x LoRA's trained
    parameters). ``params``: init_r = budget, so AdaLoRA trains P (out×r), λ (r), Q (r×in) = LoRA's B, A plus
    r numbers per matrix; target_r = max(1, round(budget / 1.5)) keeps the paper's b(0)/b(T) ratio.
    """
    b = int(budget)
    if str(match) == "params":
        return b, max(1, int(round(b / 1.5)))
    return int(math.ceil(b * 1.5 - 1e-9)), b


def _adalora_r(which: Any, budget: Any, match: Any) -> int:
    """``${adalora_r:init|target,${budget},${method.match}}`` (conf/method/adalora.yaml)."""
    if str(match) not in ADALORA_MATCH:  # reported by validation, naming method.match
        match = "rank"
    init_r, target_r = adalora_ranks(budget, match)
    return init_r if str(which) == "init" else target_r


if not OmegaConf.has_resolver("adalora_r"):
    OmegaConf.register_new_resolver("adalora_r", _adalora_r)

#: ``method.scaling``: ``peft`` keeps PEFT's scale α / (init_r + 1e-5); ``lora`` rescales α to LoRA's α / r
ADALORA_SCALING = ("peft", "lora")
#: the constant PEFT adds to ``ranknum`` (= init_r) in ``SVDLinear``: ΔW = P(λ ⊙ Q) · scaling / (ranknum + 1e-5)
PEFT_RANKNUM_EPS = 1e-5


def matched_lora_r(cfg: AdaLoraMethodConfig) -> int:
    """The LoRA rank this AdaLoRA run is matched with: target_r (``match=rank``) or init_r (``match=params``)."""
    return cfg.init_r if cfg.match == "params" else cfg.target_r


def peft_alpha(cfg: AdaLoraMethodConfig) -> float:
    """The ``lora_alpha`` handed to PEFT.

    PEFT's AdaLoRA scales its update by ``lora_alpha / (ranknum + 1e-5)`` with ``ranknum = init_r``, LoRA by
    ``alpha / r``. ``scaling=peft`` passes ``alpha`` unchanged; ``scaling=lora`` passes
    ``alpha · (init_r + 1e-5) / r_m`` (r_m = :func:`matched_lora_r`), so that AdaLoRA's scale equals LoRA's
    ``alpha / r_m`` at the same alpha (and, with the same lr, its step on ΔW per unit gradient of the factors).
    """
    if cfg.scaling == "lora":
        return float(cfg.alpha) * (cfg.init_r + PEFT_RANKNUM_EPS) / matched_lora_r(cfg)
    return float(cfg.alpha)


def schedule_steps(value: float, total_steps: int) -> int:
    """A schedule length given as a fraction (< 1) of the run, or as steps (≥ 1)."""
    return int(round(value * total_steps)) if value < 1 else int(value)


def allocation_steps(*, total: int, tinit: int, tfinal: int, deltaT: int) -> list[int]:
    """Steps at which PEFT masks to the budget: multiples of ΔT in (t_i, T − t_f), and T − t_f."""
    end = total - tfinal
    return [s for s in range(tinit + 1, end) if s % deltaT == 0] + [end]


# ---------------------------------------------------------------------------------------------------------
# The paper's GLUE hyper-parameters (AdaLoRA Table 8, DeBERTaV3-base, batch 32), for the adalora_glue preset


@dataclass(frozen=True)
class PaperGlue:
    """One row of AdaLoRA's Table 8: lr, epochs, γ, t_i, ΔT, t_f, and the task's training-set size."""

    lr: float
    epochs: int
    gamma: float
    tinit: int
    deltaT: int
    tfinal: int
    train_size: int
    batch_size: int = 32

    @property
    def total_steps(self) -> int:
        """T of the paper's run: epochs × ⌈N / batch⌉."""
        return self.epochs * math.ceil(self.train_size / self.batch_size)


PAPER_GLUE: dict[str, PaperGlue] = {
    "mnli": PaperGlue(5e-4, 7, 0.1, 8000, 100, 50000, 392702),
    "rte": PaperGlue(1.2e-3, 50, 0.3, 600, 1, 1800, 2490),
    "qnli": PaperGlue(1.2e-3, 5, 0.1, 2000, 100, 8000, 104743),
    "mrpc": PaperGlue(1e-3, 30, 0.1, 600, 1, 1800, 3668),
    "qqp": PaperGlue(5e-4, 5, 0.1, 8000, 100, 25000, 363846),
    "sst2": PaperGlue(8e-4, 24, 0.1, 6000, 100, 22000, 67349),
    "cola": PaperGlue(5e-4, 25, 0.5, 800, 10, 3500, 8551),
    "stsb": PaperGlue(2.2e-3, 25, 0.1, 800, 10, 2000, 5749),
}


def paper_glue(task: str, key: str, max_steps: Optional[int] = None) -> float | int:
    """A value of Table 8 for ``task``, with the schedule scaled to a run of ``max_steps`` steps.

    ``tinit``/``tfinal`` come back as fractions of the run (t_i/T, t_f/T of the paper's run), ``deltaT``
    as max(1, round(ΔT · max_steps / T)); ``lr``, ``gamma``, ``epochs`` unchanged. Resolver
    ``${adalora_glue:TASK,KEY[,MAX_STEPS]}`` in the ``adalora_glue`` preset.
    """
    row = PAPER_GLUE.get(str(task))
    if row is None:
        raise ConfigError(
            f"task.name: AdaLoRA's Table 8 has no hyper-parameters for '{task}'; it covers {sorted(PAPER_GLUE)}"
        )
    if key in ("tinit", "tfinal"):
        return getattr(row, key) / row.total_steps
    if key == "deltaT":
        if max_steps is None:
            raise ConfigError("train.max_steps: the adalora_glue preset scales the paper's schedule to a step "
                              "budget; set train.max_steps (e.g. train.max_steps=1200)")
        return max(1, int(round(row.deltaT * int(max_steps) / row.total_steps)))
    if key in ("lr", "gamma", "epochs", "total_steps"):
        return getattr(row, key)
    raise ConfigError(f"adalora_glue: unknown key '{key}'; use lr, gamma, tinit, tfinal, deltaT, epochs")


if not OmegaConf.has_resolver("adalora_glue"):
    OmegaConf.register_new_resolver("adalora_glue", paper_glue)


# ---------------------------------------------------------------------------------------------------------


@dataclass
class AllocationRecord:
    """Ranks right after masking at one step: PEFT's budget b(t), the formula's, per-matrix ranks."""

    step: int
    budget: int
    formula: int
    ranks: list[int]
    phase: str

    @property
    def kept(self) -> int:
        return sum(self.ranks)


@register("adalora")
class AdaLora(Method):
    """PEFT AdaLoRA; ``total_step`` is set from the run; allocation enforced and recorded."""

    step_cost = 1.7
    rank_key = "init_r"
    label = "AdaLoRA"
    color = "#2ca02c"
    marker = "^"
    budget_symbol = "b"
    order = 3
    trains = ("lora_A", "lora_B", "lora_E")
    adds_to_model_loss = True
    outputs = (RANKS_FILE, SCORES_DIR)

    config_cls = AdaLoraMethodConfig
    #: the run folder; set by the run before training, records go there (kept in memory when None)
    run_dir: Optional[Path] = None

    def __init__(self, cfg: AdaLoraMethodConfig, total_steps: int) -> None:
        super().__init__(cfg, total_steps)
        self.tinit = schedule_steps(cfg.tinit, total_steps)
        self.tfinal = schedule_steps(cfg.tfinal, total_steps)
        self.calls = 0
        self.records: list[AllocationRecord] = []
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, ranks (n_matrices,) on the device)
        self._last_step = 0
        self._under_budget: list[int] = []
        self._header_written = False

    # -- configuration -------------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, cfg: AdaLoraMethodConfig) -> None:
        if cfg.target_r <= 0:
            raise ConfigError(f"method.target_r: must be a positive integer, got {cfg.target_r}")
        if cfg.init_r < cfg.target_r:
            raise ConfigError(
                f"method.target_r: the final budget ({cfg.target_r}) exceeds the initial one "
                f"(init_r={cfg.init_r}); set init_r >= target_r (the paper uses init_r ≈ 1.5·target_r)"
            )
        if cfg.init_r == cfg.target_r:
            raise ConfigError(
                f"method.init_r: equals target_r ({cfg.target_r}), so AdaLoRA has nothing to allocate (and PEFT's "
                f"mask step fails on kthvalue(k=0)); set init_r > target_r, e.g. ceil(1.5·target_r), or use LoRA"
            )
        if cfg.alpha <= 0:
            raise ConfigError(f"method.alpha: must be > 0, got {cfg.alpha}")
        if cfg.match not in ADALORA_MATCH:
            raise ConfigError(f"method.match: one of {', '.join(ADALORA_MATCH)}, got '{cfg.match}' (rank: target_r = "
                              f"budget; params: init_r = budget, LoRA's trained parameters)")
        if cfg.scaling not in ADALORA_SCALING:
            raise ConfigError(f"method.scaling: one of {', '.join(ADALORA_SCALING)}, got '{cfg.scaling}' (peft: "
                              f"PEFT's alpha/init_r; lora: LoRA's alpha/r at the matched rank)")
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
        if cfg.scores_every < 0:
            raise ConfigError(f"method.scores_every: must be >= 0 (0 = off), got {cfg.scores_every}")

    def validate_run(self) -> None:
        T, ti, tf = self.total_steps, self.tinit, self.tfinal
        if ti + tf >= T:
            raise ConfigError(
                f"method.tinit/tfinal: the AdaLoRA schedule (tinit={ti} + tfinal={tf} steps) does not fit in "
                f"the run's {T} optimizer steps; lower tinit/tfinal (fractions < 1 scale with the run) "
                f"or raise train.max_steps"
            )
        if T - tf < 2:
            raise ConfigError(
                f"method.tfinal: AdaLoRA's last masking (step T - tfinal = {T - tf}) would come before any importance "
                f"update (PEFT updates scores at steps < T - tfinal); lower tfinal or raise train.max_steps"
            )
        if self.cfg.deltaT > T - ti - tf:
            raise ConfigError(
                f"method.deltaT: masking every {self.cfg.deltaT} steps never happens in the budgeting phase "
                f"of {T - ti - tf} steps; lower deltaT"
            )

    # -- model ---------------------------------------------------------------------------------------

    def wrap(self, model: nn.Module, targets: list[MatrixRef], head: tuple[str, ...],
             task_type: str = "SEQ_CLS") -> nn.Module:
        cfg = self.cfg
        peft_cfg = AdaLoraConfig(
            init_r=cfg.init_r,
            target_r=cfg.target_r,
            lora_alpha=peft_alpha(cfg),
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
            task_type=task_type,
        )
        peft_model = get_peft_model(model, peft_cfg)
        self._fused = cfg.fused and fast_path_available("method.fused (AdaLoRA's fused allocator)")
        if self._fused:
            from harness.kernels.adalora import install_fused_adalora

            install_fused_adalora(peft_model)
        self._e_params = [(n, p) for n, p in peft_model.named_parameters() if "lora_E" in n]
        self._allocator = peft_model.base_model.rankallocator
        by_name = {t.name: t for t in targets}
        mods = dict(peft_model.named_modules())
        self.matrices: list[dict[str, Any]] = []
        for n, p in self._e_params:
            mod_name = n.split(".lora_E")[0]
            short = mod_name[len(_PEFT_PREFIX):] if mod_name.startswith(_PEFT_PREFIX) else mod_name
            ref = by_name.get(short)
            base = mods[mod_name].get_base_layer()
            self.matrices.append({
                "name": short,
                "layer": ref.layer if ref else None,
                "type": ref.type if ref else None,
                "d_in": int(base.in_features),
                "d_out": int(base.out_features),
                "init_r": int(p.shape[0]),
            })
        b0 = sum(m["init_r"] for m in self.matrices)
        self.records = [AllocationRecord(0, b0, b0, [m["init_r"] for m in self.matrices], "init")]
        return peft_model

    def loss_terms(self, outputs: Any, task_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        # PEFT adds γ·R(P, Q) to outputs.loss inside AdaLoraModel.forward (labels passed in)
        return {"adalora/orth_reg": (outputs.loss - task_loss).detach()}

    def kept_ranks(self) -> torch.Tensor:
        """Non-zero ``lora_E`` entries per adapted matrix, shape (n_matrices,), on the device."""
        es = [p.detach() for _, p in self._e_params]
        if len({e.shape for e in es}) == 1:  # one kernel for all matrices (same init_r while training)
            return torch.count_nonzero(torch.stack(es).flatten(1), dim=1)
        return torch.stack([torch.count_nonzero(e) for e in es])

    def matrix_names(self) -> list[str]:
        """Module names of the adapted matrices (without PEFT's prefix), in the order of :meth:`kept_ranks`."""
        return [m["name"] for m in self.matrices]

    # -- per step ------------------------------------------------------------------------------------

    def budget_at(self, step: int) -> int:
        """b(t) by the formula of PAPERS.md (code form) for this run."""
        alloc = self._allocator
        return budget_formula(step, b0=alloc.init_bgt, bT=alloc.target_bgt, total=self.total_steps,
                              tinit=self.tinit, tfinal=self.tfinal)

    def is_allocation_step(self, step: int) -> bool:
        """PEFT masks to the budget at this step (budget phase on multiples of ΔT, and T − t_f)."""
        end = self.total_steps - self.tfinal
        return step == end or (self.tinit < step < end and step % self.cfg.deltaT == 0)

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)
        self.calls += 1
        self._last_step = step
        if self.is_allocation_step(step) or step == self.total_steps:
            self._pending.append((step, self.kept_ranks()))  # stays on the device until the next log step
        every = self.cfg.scores_every
        if every and step % every == 0 and step < self.total_steps - self.tfinal:
            self._save_scores(step)

    def log_metrics(self, model: nn.Module) -> dict[str, float]:
        self._flush()
        last = self.records[-1]
        out = {
            "adalora/budget": float(self._allocator.budget_schedule(self._last_step)[0]),
            "adalora/kept_rank": float(last.kept),
            "adalora/rank_step": float(last.step),
        }
        out.update({f"adalora/rank/{t}": v for t, v in self._mean_rank_by_type(last.ranks).items()})
        return out

    def _mean_rank_by_type(self, ranks: list[int]) -> dict[str, float]:
        sums: dict[str, list[int]] = {}
        for m, r in zip(self.matrices, ranks):
            sums.setdefault(m["type"] or "other", []).append(r)
        return {t: sum(v) / len(v) for t, v in sums.items()}

    def _phase(self, step: int) -> str:
        if step <= self.tinit:
            return "warmup"
        return "budget" if step < self.total_steps - self.tfinal else "final"

    def _flush(self) -> None:
        """Copy pending ranks to the host (one transfer), check them, append them to the records file."""
        if not self._pending:
            return
        host = torch.stack([r for _, r in self._pending]).cpu().tolist()
        new = []
        for (step, _), ranks in zip(self._pending, host):
            budget = int(self._allocator.budget_schedule(step)[0])
            new.append(AllocationRecord(step, budget, self.budget_at(step), [int(r) for r in ranks], self._phase(step)))
        self._pending.clear()
        self.records.extend(new)
        self._write(new)
        for rec in new:
            if rec.kept > rec.budget:
                raise RunFailed(
                    f"AdaLoRA: at step {rec.step} the schedule's budget is b(t)={rec.budget} but {rec.kept} triplets "
                    f"are kept: the mask was not applied (is update_and_allocate called after optimizer.step() "
                    f"and before zero_grad()?)"
                )
            if rec.kept < rec.budget:
                if not self._under_budget:
                    log.warning("AdaLoRA: step %d kept %d < budget %d (ties at the threshold over-prune, or a kept "
                                "λ is exactly 0)", rec.step, rec.kept, rec.budget)
                self._under_budget.append(rec.step)

    def _write(self, new: list[AllocationRecord]) -> None:
        """Append records to ``adalora_ranks.jsonl``; the first write puts the header and step 0 first."""
        if self.run_dir is None:
            return
        if not self._header_written:
            alloc = self._allocator
            header = {
                "kind": "header", "matrices": self.matrices, "init_budget": alloc.init_bgt,
                "target_budget": alloc.target_bgt, "total_steps": self.total_steps, "tinit": self.tinit,
                "tfinal": self.tfinal, "deltaT": self.cfg.deltaT, "init_r": self.cfg.init_r,
                "target_r": self.cfg.target_r,
            }
            lines = [header]
            new = self.records  # every record so far, the step-0 one included
            self._header_written = True
        else:
            lines = []
        lines += [{"step": r.step, "phase": r.phase, "budget": r.budget, "formula": r.formula, "kept": r.kept,
                   "ranks": r.ranks} for r in new]
        with open(Path(self.run_dir) / RANKS_FILE, "a") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """Current importance S of every triplet, per matrix (init_r,), as PEFT ranks them (empty after T − t_f).

        S_i = s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji), with s = Ī·Ū from PEFT's allocator state.
        """
        alloc = self._allocator
        if not alloc.exp_avg_ipt:
            return {}
        out = {}
        for (n, _), m in zip(self._e_params, self.matrices):
            key_e = n[len(_PEFT_PREFIX):] if n.startswith(_PEFT_PREFIX) else n
            key_a, key_b = key_e.replace("lora_E", "lora_A"), key_e.replace("lora_E", "lora_B")
            if key_e not in alloc.exp_avg_ipt:
                return {}
            s_a = alloc._element_score(key_a).mean(dim=1, keepdim=True)
            s_b = alloc._element_score(key_b).mean(dim=0).view(-1, 1)
            out[m["name"]] = alloc._combine_ipt(alloc._element_score(key_e), torch.cat([s_a, s_b], dim=1)).detach()
        return out

    def _save_scores(self, step: int) -> None:
        if self.run_dir is None:
            return
        scores = self.triplet_scores()
        if not scores:
            return
        from safetensors.torch import save

        folder = Path(self.run_dir) / SCORES_DIR
        folder.mkdir(exist_ok=True)
        tensors = {k: v.float().cpu().contiguous() for k, v in scores.items()}
        write_bytes_atomic(folder / f"step_{step:07d}.safetensors", save(tensors))

    # -- checkpoints (harness.loop) -------------------------------------------------------------------

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """PEFT's allocator state — the sensitivity/uncertainty averages Ī, Ū (and the last I) per parameter,
        the rank pattern of the final phase — and this method's records. The current masks are the zeros of
        ``lora_E``, saved with the weights."""
        self._flush()
        alloc = self._allocator
        return {
            "ipt": dict(alloc.ipt), "exp_avg_ipt": dict(alloc.exp_avg_ipt), "exp_avg_unc": dict(alloc.exp_avg_unc),
            "rank_pattern": self._rank_pattern(),
            "calls": self.calls, "last_step": self._last_step, "under_budget": list(self._under_budget),
            "header_written": self._header_written,
            "records": [dict(vars(r)) for r in self.records],
        }

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the records file is rewritten to the checkpoint's records."""
        alloc = self._allocator
        device = next(p.device for _, p in self._e_params)
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(alloc, key, {n: t.to(device) for n, t in state[key].items()})
        alloc.peft_config.rank_pattern = state["rank_pattern"]
        self.calls, self._last_step = int(state["calls"]), int(state["last_step"])
        self._under_budget = list(state["under_budget"])
        self.records = [AllocationRecord(**r) for r in state["records"]]
        self._pending.clear()
        self._header_written = False
        if self.run_dir is not None:
            (Path(self.run_dir) / RANKS_FILE).unlink(missing_ok=True)
            if state["header_written"]:
                self._write([])

    # -- end of run ----------------------------------------------------------------------------------

    def finish(self, model: nn.Module) -> dict[str, Any]:
        alloc = self._allocator
        if self.calls == 0:
            raise RunFailed("AdaLoRA: update_and_allocate was never called; the run trained plain LoRA")
        self._flush()
        final = [int(r) for r in self.kept_ranks().tolist()]
        must_move = alloc.init_bgt > alloc.target_bgt and self.total_steps - self.tfinal > self.tinit
        if must_move and sum(final) >= alloc.init_bgt:
            raise RunFailed(
                f"AdaLoRA: the budget never moved (kept rank {sum(final)} = initial budget {alloc.init_bgt}) "
                f"although the schedule goes to {alloc.target_bgt}"
            )
        if self._last_step >= self.total_steps - self.tfinal and sum(final) > alloc.target_bgt:
            raise RunFailed(
                f"AdaLoRA: {sum(final)} triplets kept at the end, above the final budget b(T)={alloc.target_bgt}"
            )
        by_type: dict[str, int] = {}
        for m, r in zip(self.matrices, final):
            by_type[m["type"] or "other"] = by_type.get(m["type"] or "other", 0) + r
        mean_by_type = self._mean_rank_by_type(final)
        trained = sum(m["init_r"] * (m["d_in"] + m["d_out"] + 1) for m in self.matrices)
        effective = sum(r * (m["d_in"] + m["d_out"] + 1) for m, r in zip(self.matrices, final))
        return {
            "adalora/init_budget": alloc.init_bgt,
            "adalora/target_budget": alloc.target_bgt,
            "adalora/final_kept_rank": sum(final),
            "adalora/tinit_steps": self.tinit,
            "adalora/tfinal_steps": self.tfinal,
            "adalora/allocation_steps": len(self.records) - 1,
            "adalora/under_budget_steps": len(self._under_budget),
            "adalora/zero_rank_matrices": sum(1 for r in final if r == 0),
            "adalora/trained_adapter_params": trained,
            "adalora/effective_adapter_params": effective,
            **{f"adalora/final_mean_rank/{t}": v for t, v in mean_by_type.items()},
            "adalora/final_rank_by_type": by_type,
            "adalora/final_ranks": dict(zip(self.matrix_names(), final)),
            "adalora/rank_pattern": [
                {"matrix": m["name"], "layer": m["layer"], "type": m["type"], "rank": r, "init_r": m["init_r"]}
                for m, r in zip(self.matrices, final)
            ],
            "adalora/allocation": [[rec.step, rec.budget, rec.kept] for rec in self.records],
            "adalora/records_file": RANKS_FILE if self.run_dir is not None else None,
        }

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """PEFT's ``save_pretrained``, the rank pattern as lists first (the fused allocator keeps it on the
        device until the final mask)."""
        self._rank_pattern()
        super().save(model, out_dir)

    def _rank_pattern(self) -> Optional[dict[str, list[bool]]]:
        """The allocator's rank pattern as PEFT's dict of lists (the fused allocator keeps tensors until the final
        mask: converted in place, one host sync); None before the first mask."""
        if self._fused:
            from harness.kernels.adalora import rank_pattern_lists

            return rank_pattern_lists(self._allocator)
        return self._allocator.peft_config.rank_pattern

    def snapshot_view(self, module: nn.Module) -> SnapshotView:
        """W0 + s·B (A ⊙ E) = W0 + s·P diag(λ) Q: A (r, in), E (r, 1), B (out, r); PEFT's s = alpha / (ranknum +
        1e-5), r = init_r (the kept rank is E's non-zero entries)."""
        base, a = peft_layer(module, AdaLoraLayer)
        ranknum = float(module.ranknum[a].item())
        return SnapshotView("gated_low_rank", base, lambda: {"A": module.lora_A[a].detach(), "E": module.lora_E[a].detach(),
                                                             "B": module.lora_B[a].detach()},
                            scale=float(module.scaling[a]) / (ranknum + PEFT_RANKNUM_EPS), rank=int(module.r[a]), adapter=a)

    def effective_parameters(self, model: nn.Module) -> int:
        """Σ final rank·(d_in + d_out + 1) over adapted matrices + the other trained parameters."""
        final = [int(r) for r in self.kept_ranks().tolist()]
        adapter = sum(m["init_r"] * (m["d_in"] + m["d_out"] + 1) for m in self.matrices)
        eff = sum(r * (m["d_in"] + m["d_out"] + 1) for m, r in zip(self.matrices, final))
        return trainable_parameters(model) - adapter + eff
