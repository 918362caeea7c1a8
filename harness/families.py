"""One table mapping each model family's module names to the papers' matrix types.

Matrix types follow the AdaLoRA paper: Wq, Wk, Wv, Wo (attention) and Wf1, Wf2 (feed-forward: the up and the
down projection), plus Wg, the gate of a gated feed-forward block (Llama's ``down(act(gate(x)) * up(x))``: Wg =
gate_proj, Wf1 = up_proj, Wf2 = down_proj), so a decoder layer has seven types and an encoder layer six.
Every adapted linear layer of a supported model becomes a :class:`MatrixRef` (module name, layer, type),
so heatmaps and ΔM/ΔD plots read "layer × matrix type" for any model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import ConfigError

if TYPE_CHECKING:  # torch only where a model is at hand: harness.config (and the CLI's checks) import this module
    from torch import nn

MATRIX_TYPES: tuple[str, ...] = ("Wq", "Wk", "Wv", "Wo", "Wg", "Wf1", "Wf2")
#: the attention matrices and the feed-forward ones (AdaLoRA's "FFN vs attention" verdict groups)
ATTENTION_TYPES: tuple[str, ...] = ("Wq", "Wk", "Wv", "Wo")
FFN_TYPES: tuple[str, ...] = ("Wg", "Wf1", "Wf2")
#: what each type is, in words (figure titles)
TYPE_NAMES: dict[str, str] = {"Wq": "query", "Wk": "key", "Wv": "value", "Wo": "attention output",
                              "Wg": "FFN gate", "Wf1": "FFN up", "Wf2": "FFN down"}


@dataclass(frozen=True)
class Family:
    """Module naming of one model family.

    ``layer_prefix`` is a regex matching the start of a module name up to and including the layer
    index; ``types`` maps each matrix type to module-name remainders after that prefix; ``head`` names
    the task-head modules that are trained in every method.
    """

    name: str
    layer_prefix: str
    types: dict[str, tuple[str, ...]]
    head: tuple[str, ...]


_BERT_TYPES = {
    "Wq": ("attention.self.query",),
    "Wk": ("attention.self.key",),
    "Wv": ("attention.self.value",),
    "Wo": ("attention.output.dense",),
    "Wf1": ("intermediate.dense",),
    "Wf2": ("output.dense",),
}

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", r"^(?:.*\.)?encoder\.layer\.(\d+)\.", _BERT_TYPES, ("classifier",)),
    "roberta": Family("roberta", r"^(?:.*\.)?encoder\.layer\.(\d+)\.", _BERT_TYPES, ("classifier",)),
    "deberta-v2": Family(
        "deberta-v2",
        r"^(?:.*\.)?encoder\.layer\.(\d+)\.",
        {
            "Wq": ("attention.self.query_proj",),
            "Wk": ("attention.self.key_proj",),
            "Wv": ("attention.self.value_proj",),
            "Wo": ("attention.output.dense",),
            "Wf1": ("intermediate.dense",),
            "Wf2": ("output.dense",),
        },
        ("pooler", "classifier"),
    ),
    "llama": Family(
        "llama",
        r"^(?:.*\.)?layers\.(\d+)\.",
        {
            "Wq": ("self_attn.q_proj",),
            "Wk": ("self_attn.k_proj",),
            "Wv": ("self_attn.v_proj",),
            "Wo": ("self_attn.o_proj",),
            "Wg": ("mlp.gate_proj",),
            "Wf1": ("mlp.up_proj",),
            "Wf2": ("mlp.down_proj",),
        },
        ("score",),
    ),
}

# transformers `model_type` -> family
MODEL_TYPE_TO_FAMILY: dict[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "deberta-v2": "deberta-v2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
}


@dataclass(frozen=True, order=True)
class MatrixRef:
    """One adaptable linear layer: its module name, layer index and matrix type (Wq … Wf2)."""

    layer: int
    type_index: int
    name: str
    type: str

    def selected_by(self, entry: str) -> bool:
        """Whether a ``method.targets``-style entry — a matrix type or a module-name suffix — names this matrix."""
        if entry in MATRIX_TYPES:
            return self.type == entry
        return self.name == entry or self.name.endswith("." + entry)


def family_for(model_type: str) -> Family:
    """The family of a transformers ``model_type``; ConfigError listing the supported ones otherwise."""
    try:
        return FAMILIES[MODEL_TYPE_TO_FAMILY[model_type]]
    except KeyError:
        raise ConfigError(
            f"model: model_type '{model_type}' has no matrix-type table; supported: "
            f"{sorted(MODEL_TYPE_TO_FAMILY)} (add it to harness/families.py)"
        ) from None


def classify(name: str, family: Family) -> tuple[int, str] | None:
    """(layer, matrix type) of a module name, or None when it is not one of the family's matrix types."""
    m = re.match(family.layer_prefix, name)
    if m is None:
        return None
    rest = name[m.end() :]
    for mtype, suffixes in family.types.items():
        if rest in suffixes:
            return int(m.group(1)), mtype
    return None


def _no_match(what: str, family: Family) -> ConfigError:
    """The error of a ``method.targets`` entry (or list) that selects nothing, listing what the family offers."""
    suffixes = sorted({s for sfx in family.types.values() for s in sfx})
    return ConfigError(f"method.targets: {what} no adaptable linear layer of this {family.name} model; use matrix "
                       f"types {[t for t in MATRIX_TYPES if t in family.types]} or module suffixes {suffixes}")


def linear_names(model: nn.Module) -> list[str]:
    """Names of all nn.Linear modules of a model."""
    from torch import nn

    return [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)]


def resolve_targets(
    model: nn.Module, family: Family, targets: list[str], layers: list[int] | None = None
) -> list[MatrixRef]:
    """The adapted matrices selected by ``targets`` (matrix types or module-name suffixes).

    A matrix type the family does not have (Wg on a model without a gated feed-forward block) selects nothing, so
    the default, every type, fits every family. Raises ConfigError naming an entry that selects nothing the family
    has (a module suffix that matches no layer), or when nothing at all is selected, listing what the model offers.
    """
    all_linear = linear_names(model)
    known: list[MatrixRef] = []
    for n in all_linear:
        c = classify(n, family)
        if c is not None:
            known.append(MatrixRef(c[0], MATRIX_TYPES.index(c[1]), n, c[1]))
    chosen: dict[str, MatrixRef] = {}
    for t in targets:
        hits = [r for r in known if r.selected_by(t)]
        absent_type = t in MATRIX_TYPES and t not in family.types
        if not hits and not absent_type:
            raise _no_match(f"'{t}' matches", family)
        for r in hits:
            chosen[r.name] = r
    if not chosen:
        raise _no_match(f"{list(targets)} match", family)
    refs = sorted(chosen.values())
    if layers is not None:
        n_layers = 1 + max(r.layer for r in known)
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ConfigError(
                f"method.layers: {bad} out of range; this model has layers 0..{n_layers - 1}"
            )
        refs = [r for r in refs if r.layer in set(layers)]
    return refs
