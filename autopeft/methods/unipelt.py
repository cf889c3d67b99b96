"""UniPELT (Mao et al., 2022): LoRA, prefix tuning and a serial adapter together, each
behind a learned gate so training can turn each one up or down per example; follows the
reference code (github.com/morningmoni/UniPELT):

* prefix: peft's prefix with the MLP reparameterisation (``Embedding -> Linear(H, 512) ->
  tanh -> Linear(512, L*2*H)``, the reference's ``mid_dim`` 512); one gate per layer,
  shared by the virtual keys and values (``_modules.PrefixGate``);
* LoRA (our ``Bottleneck``, no biases, peft's LoRA has no gate): the gate *replaces* the
  ``alpha / r`` scale, so there is no ``alpha``;
* adapter: Pfeiffer-placed (``_modules.AfterFfn``), gated.

Every gate is ``Linear(H, 1)``, ``sigmoid`` per token averaged over the example's tokens
(``_modules.example_gate``; pads left out, unlike the reference). ``layers`` places the
LoRA, adapter and prefix gates; the prefix itself is in every layer (peft's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods import _common, prefix
from autopeft.methods._common import (BottleneckFields, layers_field, positive_int,
                                      targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec(BottleneckFields):
    r: int = field(default=8, metadata={
        "help": "rank of the gated LoRA (its gate replaces alpha / r)"})
    lora_targets: list[str] = targets_field(("query", "value"), "modules the gated LoRA adapts")
    num_virtual_tokens: int = field(default=10, metadata={
        "help": "prefix length: virtual keys/values per layer"})
    prefix_projection: bool = field(default=True, metadata={
        "help": "train the prefix through an MLP, as the reference does"})
    encoder_hidden_size: int = field(default=512, metadata={
        "help": "width of that MLP in units (the reference's mid_dim 512)"})
    layers: Any = layers_field("layers with gated LoRA, adapter, prefix gate (prefix: all)")

    def __post_init__(self) -> None:
        self.check_bottleneck("unipelt")
        positive_int("r", self.r, "unipelt")
        prefix.Spec(self.num_virtual_tokens, self.prefix_projection, self.encoder_hidden_size)
        _common.placement("unipelt", self.layers, self.lora_targets)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.methods._modules import add_bottlenecks, add_prefix_gates

    model = prefix.apply(model, prefix.Spec(spec.num_virtual_tokens, spec.prefix_projection,
                                            spec.encoder_hidden_size), ctx)
    inner = unwrap(model)
    add_bottlenecks(inner, ctx, "unipelt_lora", spec.lora_targets, spec.layers, spec.r,
                    "parallel", "identity", bias=False, gated=True)
    add_bottlenecks(inner, ctx, "unipelt_adapter", [], spec.layers,
                    spec.bottleneck_size(ctx.hidden_size), "after_ffn", spec.activation, gated=True)
    add_prefix_gates(inner, ctx, "unipelt_prefix_gate", spec.layers)
    return model


METHOD = Method(name="unipelt", category="hybrid", spec=Spec, apply=apply, engine="peft+autopeft",
                prompt_learning=True, families=("encoder", "decoder"),  # T5: its gates fail
                summary="UniPELT: gated LoRA + prefix tuning (MLP) + Pfeiffer adapter")
