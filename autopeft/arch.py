"""Where attention and FFN sit in each model family: the one place that knows.

Methods name *roles* (``query``, ``key``, ``value``, ``attn_out``, ``ffn_in``, ``ffn_out``)
and *layer indices*; ``Arch.find`` turns them into the model's module names. Adding a
model family means adding one entry to ``ARCHS``.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
FFN = ("ffn_in", "ffn_out")
LAYER_SETS = ("all", "upper_half", "lower_half", "first", "last")


@dataclass(frozen=True)
class Arch:
    """Module layout of one model family.

    ``layer_prefix`` is a regex for the path of one transformer layer, with group ``idx``;
    ``roles`` maps a role to the module paths *inside* a layer that play it. ``heads``
    are the task-head modules of classification models (new, so trained with every
    method and saved with every export); a language model's pretrained ``lm_head`` is not
    one: PEFT leaves it frozen.
    ``self_attention`` are the self-attention modules inside a layer (the ones that receive
    the key/value cache, where prefix-tuning's virtual keys and values enter).
    """

    family: str  # encoder | decoder | encoder-decoder
    layer_prefix: str
    roles: dict[str, tuple[str, ...]]
    heads: tuple[str, ...]
    layers_attr: str = "num_hidden_layers"
    self_attention: tuple[str, ...] = ()
    # Layer norms inside a layer (Houlsby adapters train them); the norm that follows the
    # FFN's residual add in post-LN models (none in pre-LN models: there the layer's output
    # is that sum). Where AdapterHub's Pfeiffer adapter reads its input.
    norms: tuple[str, ...] = ()
    ffn_norm: tuple[str, ...] = ()

    def layer_of(self, module_name: str) -> tuple[int, str] | None:
        """``(layer index, path inside the layer)`` for a module inside a layer, else None."""
        m = re.match(rf"^(?:.*\.)?{self.layer_prefix}\.(?P<rest>.+)$", module_name)
        if m is None:
            return None
        return int(m.group("idx")), m.group("rest")

    def layer_path(self, module_name: str) -> str | None:
        """Full name of the layer holding a module (``bert.encoder.layer.0``), else None.
        T5's encoder and decoder blocks of the same index are different layer paths."""
        m = re.match(rf"^((?:.*\.)?{self.layer_prefix})\.", module_name)
        return m.group(1) if m else None

    def find(self, model: Any, roles: Iterable[str], layers: Sequence[int] | None = None) -> list[str]:
        """Full names of the modules that play ``roles`` in ``layers`` (all layers if None)."""
        return self.find_paths(model, {path for role in roles for path in self.roles[role]}, layers)

    def find_paths(self, model: Any, wanted: Iterable[str],
                   layers: Sequence[int] | None = None) -> list[str]:
        """Full names of the modules at paths ``wanted`` (inside a layer) in ``layers``."""
        wanted = set(wanted)
        keep = None if layers is None else set(layers)
        names = []
        for name, _ in model.named_modules():
            where = self.layer_of(name)
            if where and where[1] in wanted and (keep is None or where[0] in keep):
                names.append(name)
        return names

    def head_names(self, model: Any) -> list[str]:
        present = {name for name, _ in model.named_modules()}
        return [h for h in self.heads if h in present]


_BERT_LIKE = dict(
    family="encoder",
    layer_prefix=r"encoder\.layer\.(?P<idx>\d+)",
    roles={"query": ("attention.self.query",), "key": ("attention.self.key",),
           "value": ("attention.self.value",), "attn_out": ("attention.output.dense",),
           "ffn_in": ("intermediate.dense",), "ffn_out": ("output.dense",)},
    heads=("classifier",),
    self_attention=("attention.self",),
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
    ffn_norm=("output.LayerNorm",),
)

ARCHS: dict[str, Arch] = {
    "bert": Arch(**_BERT_LIKE),
    "roberta": Arch(**_BERT_LIKE),
    "xlm-roberta": Arch(**_BERT_LIKE),
    "electra": Arch(**_BERT_LIKE),
    "distilbert": Arch(
        family="encoder", layer_prefix=r"transformer\.layer\.(?P<idx>\d+)",
        roles={"query": ("attention.q_lin",), "key": ("attention.k_lin",),
               "value": ("attention.v_lin",), "attn_out": ("attention.out_lin",),
               "ffn_in": ("ffn.lin1",), "ffn_out": ("ffn.lin2",)},
        heads=("pre_classifier", "classifier"), layers_attr="n_layers",
        self_attention=("attention",), norms=("sa_layer_norm", "output_layer_norm"),
        ffn_norm=("output_layer_norm",)),
    "llama": Arch(
        family="decoder", layer_prefix=r"layers\.(?P<idx>\d+)",
        roles={"query": ("self_attn.q_proj",), "key": ("self_attn.k_proj",),
               "value": ("self_attn.v_proj",), "attn_out": ("self_attn.o_proj",),
               "ffn_in": ("mlp.gate_proj", "mlp.up_proj"), "ffn_out": ("mlp.down_proj",)},
        heads=("score",), self_attention=("self_attn",),
        norms=("input_layernorm", "post_attention_layernorm")),
    "gpt2": Arch(
        family="decoder", layer_prefix=r"h\.(?P<idx>\d+)",
        # GPT-2 fuses q, k and v into one Conv1D: each of the three roles selects it.
        roles={"query": ("attn.c_attn",), "key": ("attn.c_attn",), "value": ("attn.c_attn",),
               "attn_out": ("attn.c_proj",), "ffn_in": ("mlp.c_fc",), "ffn_out": ("mlp.c_proj",)},
        heads=("score",), layers_attr="n_layer", self_attention=("attn",),
        norms=("ln_1", "ln_2")),
    "t5": Arch(
        family="encoder-decoder", layer_prefix=r"block\.(?P<idx>\d+)",
        # Encoder blocks: layer.0 self-attention, layer.1 FFN. Decoder blocks: layer.0
        # self-attention, layer.1 cross-attention, layer.2 FFN. Layer i means both stacks.
        roles={"query": ("layer.0.SelfAttention.q", "layer.1.EncDecAttention.q"),
               "key": ("layer.0.SelfAttention.k", "layer.1.EncDecAttention.k"),
               "value": ("layer.0.SelfAttention.v", "layer.1.EncDecAttention.v"),
               "attn_out": ("layer.0.SelfAttention.o", "layer.1.EncDecAttention.o"),
               "ffn_in": ("layer.1.DenseReluDense.wi", "layer.2.DenseReluDense.wi",
                          "layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_1",
                          "layer.2.DenseReluDense.wi_0", "layer.2.DenseReluDense.wi_1"),
               "ffn_out": ("layer.1.DenseReluDense.wo", "layer.2.DenseReluDense.wo")},
        heads=("classification_head",), layers_attr="num_layers",
        self_attention=("layer.0.SelfAttention",),
        norms=("layer.0.layer_norm", "layer.1.layer_norm", "layer.2.layer_norm")),
}
ARCHS["mistral"] = ARCHS["qwen2"] = ARCHS["llama"]


def arch_for(config: Any) -> Arch:
    """The layout for a transformers config (``config.model_type``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise UserError(f"model type {model_type!r} is not supported yet; supported: "
                        f"{', '.join(sorted(ARCHS))}")
    return ARCHS[model_type]


def num_layers(config: Any) -> int:
    return int(getattr(config, arch_for(config).layers_attr))


def resolve_layers(layers: str | Sequence[int], n: int) -> list[int]:
    """Turn a placement (``all``, ``upper_half``, ``lower_half``, ``first``, ``last`` or a
    list of indices) into sorted layer indices for a model with ``n`` layers."""
    if isinstance(layers, str):
        named = {"all": range(n), "upper_half": range(n // 2, n), "lower_half": range(n // 2),
                 "first": range(1), "last": range(n - 1, n)}
        if layers not in named:
            raise UserError(f"unknown layer set {layers!r}; use one of {', '.join(LAYER_SETS)} "
                            "or a list of layer indices")
        return list(named[layers])
    out = sorted({int(i) for i in layers})
    bad = [i for i in out if not 0 <= i < n]
    if bad or not out:
        raise UserError(f"layer indices {list(layers)} do not fit a model with {n} layers "
                        f"(valid: 0..{n - 1})")
    return out


def check_placement(layers: Any, targets: Any = None) -> None:
    """Validate a placement without a model (space loading): shape of ``layers``/``targets``."""
    if isinstance(layers, str):
        if layers not in LAYER_SETS:
            raise UserError(f"unknown layer set {layers!r}; use one of {', '.join(LAYER_SETS)} "
                            "or a list of layer indices")
    elif not (isinstance(layers, (list, tuple)) and layers
              and all(isinstance(i, int) and i >= 0 for i in layers)):
        raise UserError(f"layers must be a layer set name or a non-empty list of indices, got {layers!r}")
    if targets is not None:
        if isinstance(targets, str) or not targets:
            raise UserError(f"targets must be a non-empty list of roles ({', '.join(ROLES)}), got {targets!r}")
        unknown = [t for t in targets if t not in ROLES]
        if unknown:
            raise UserError(f"unknown target role(s) {unknown}; roles are {', '.join(ROLES)}")
