"""BitFit (Ben Zaken et al., 2022): train only the bias terms (a partial method).

Done with ``requires_grad`` on biases rather than peft's ``BEFT``, so it composes with any
other method. ``layers`` restricts it to biases inside those layers (embeddings and
pooler biases train only with ``all``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.arch import resolve_layers
from autopeft.errors import UserError
from autopeft.methods._common import layers_field, placement, unwrap
from autopeft.methods.registry import Method


@dataclass
class Spec:
    layers: Any = layers_field("layers whose biases train (embedding/pooler biases: all only)")

    def __post_init__(self) -> None:
        placement("bitfit", self.layers)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    inner = unwrap(model)
    keep = set(resolve_layers(spec.layers, ctx.num_layers))
    every_layer = spec.layers == "all"
    heads = tuple(h + "." for h in ctx.arch.head_names(inner))  # the head trains anyway
    found = 0
    for name, param in inner.named_parameters():
        if not name.endswith("bias") or name.startswith(heads):
            continue
        where = ctx.arch.layer_of(name.rsplit(".", 1)[0])
        if (where is None and every_layer) or (where is not None and where[0] in keep):
            param.requires_grad_(True)
            found += 1
    if not found:
        raise UserError(f"bitfit: this model has no bias terms in layers {spec.layers!r} "
                        "(LLaMA and T5 have none); drop bitfit from the space for it")
    return model


# Every family: encoders and GPT-2 have biases; LLaMA and T5 have none, which apply says (a
# space drops it there with that reason).
METHOD = Method(name="bitfit", category="partial", spec=Spec, apply=apply,
                summary="BitFit: train only the bias terms")
