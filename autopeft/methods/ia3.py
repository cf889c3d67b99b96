"""(IA)3 (Liu et al., 2022) through peft: learned vectors that rescale keys, values and
the FFN's inner activations.

``targets`` are roles; those in ``ffn_in``/``ffn_out`` are scaled on their input (peft's
``feedforward_modules``), the others on their output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.arch import FFN
from autopeft.methods._common import (attach_peft, exact_regex, layers_field, placement,
                                      target_modules, targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    targets: list[str] = targets_field(("key", "value", "ffn_out"),
                                       "modules to rescale (FFN roles on their input)")
    layers: Any = layers_field("layers whose target modules are rescaled")

    def __post_init__(self) -> None:
        placement("ia3", self.layers, self.targets)


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import IA3Config

    names = target_modules(model, ctx, spec.targets, spec.layers, "ia3")
    ffn_roles = [t for t in spec.targets if t in FFN]
    ffn = ctx.arch.find(model, ffn_roles, None) if ffn_roles else []
    ffn = [n for n in names if n in set(ffn)]
    return IA3Config(target_modules=exact_regex(names),
                     feedforward_modules=exact_regex(ffn) if ffn else [])


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx)


METHOD = Method(name="ia3", category="additive", spec=Spec, apply=apply, engine="peft",
                peft_native=True, summary="(IA)3: learned rescaling of keys, values and FFN")
