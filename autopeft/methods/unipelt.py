"""UniPELT (Mao et al., 2022): LoRA, prefix tuning and a serial adapter together, each
behind a learned gate ``sigmoid(W x)`` so training can turn each one up or down per input.

Composition: peft's prefix (in every layer) with ``_modules.PrefixGate`` on each layer's
virtual keys/values; LoRA and the (Pfeiffer-placed) adapter are our ``Bottleneck`` with a
gate (peft's LoRA has none). ``layers`` places the LoRA, adapter and prefix gates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods import _common, prefix
from autopeft.methods._common import BottleneckFields, positive, positive_int, unwrap
from autopeft.methods.registry import Method


@dataclass
class Spec(BottleneckFields):
    r: int = 8  # LoRA rank
    alpha: float = 16.0  # LoRA scaling alpha / r
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    num_virtual_tokens: int = 10
    layers: Any = "all"

    def __post_init__(self) -> None:
        self.check_bottleneck("unipelt")
        positive_int("r", self.r, "unipelt")
        positive("alpha", self.alpha, "unipelt")
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "unipelt")
        _common.placement("unipelt", self.layers, self.lora_targets)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.methods._modules import add_bottlenecks, add_prefix_gates

    model = prefix.apply(model, prefix.Spec(num_virtual_tokens=spec.num_virtual_tokens), ctx)
    inner = unwrap(model)
    add_bottlenecks(inner, ctx, "unipelt_lora", spec.lora_targets, spec.layers, spec.r,
                    "parallel", "identity", spec.alpha / spec.r, bias=False, gated=True)
    add_bottlenecks(inner, ctx, "unipelt_adapter", ["ffn_out"], spec.layers,
                    spec.bottleneck_size(ctx.hidden_size), "serial", spec.activation, gated=True)
    add_prefix_gates(inner, ctx, "unipelt_prefix_gate", spec.layers)
    return model


METHOD = Method(name="unipelt", category="hybrid", spec=Spec, apply=apply, engine="peft+autopeft",
                prompt_learning=True, families=("encoder", "decoder"),  # T5: its gates fail
                summary="UniPELT: gated LoRA + prefix tuning + adapter")
