"""MAM adapter (He et al., 2022, "Towards a unified view"): prefix tuning on attention
plus a scaled parallel adapter beside the FFN, their best mix.

A composition of ``prefix`` (peft) and ``parallel_adapter`` (own); ``layers`` places the
adapter, the prefix is in every layer (peft's prefix is not per-layer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods import _common, parallel_adapter, prefix
from autopeft.methods._common import BottleneckFields, layers_field, positive, positive_int
from autopeft.methods.registry import Method


@dataclass
class Spec(BottleneckFields):
    num_virtual_tokens: int = field(default=30, metadata={
        "help": "prefix length: virtual keys/values per layer (He et al.: 30)"})
    prefix_projection: bool = field(default=False, metadata={
        "help": "train the prefix through an MLP (stored: the prefix values only)"})
    scaling: float = field(default=4.0, metadata={
        "help": "factor s on the parallel adapter's output, > 0 (He et al.: 4)"})
    layers: Any = layers_field("layers with the parallel adapter (prefix: all)")

    def __post_init__(self) -> None:
        self.check_bottleneck("mam")
        positive_int("num_virtual_tokens", self.num_virtual_tokens, "mam")
        positive("scaling", self.scaling, "mam")
        _common.placement("mam", self.layers)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    model = prefix.apply(model, prefix.Spec(num_virtual_tokens=spec.num_virtual_tokens,
                                            prefix_projection=spec.prefix_projection), ctx)
    adapter = parallel_adapter.Spec(reduction_factor=spec.reduction_factor,
                                    bottleneck=spec.bottleneck, activation=spec.activation,
                                    scaling=spec.scaling, layers=spec.layers)
    return parallel_adapter.apply(model, adapter, ctx, name="mam_adapter")


METHOD = Method(name="mam", category="hybrid", spec=Spec, apply=apply, engine="peft+autopeft",
                prompt_learning=True, families=prefix.METHOD.families,
                no_classification=prefix.METHOD.no_classification,
                summary="MAM adapter: prefix tuning + scaled parallel adapter on the FFN")
