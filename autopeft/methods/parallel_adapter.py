"""Parallel adapter (He et al., 2022): a scaled bottleneck beside the FFN,
``FFN(x) + scaling * f(x)``, reading the FFN's input and adding to its output (before the
residual connection). Own module (``_modules.Bottleneck``), hooked onto ``ffn_in`` and
``ffn_out``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods import _common
from autopeft.methods._common import BottleneckFields, layers_field, positive, unwrap
from autopeft.methods.registry import Method


@dataclass
class Spec(BottleneckFields):
    scaling: float = field(default=1.0, metadata={
        "help": "factor s on the adapter's output, FFN(x) + s * f(x), > 0 (He et al.: 4 in MAM)"})
    layers: Any = layers_field("layers that get a parallel adapter")

    def __post_init__(self) -> None:
        self.check_bottleneck("parallel_adapter")
        positive("scaling", self.scaling, "parallel_adapter")
        _common.placement("parallel_adapter", self.layers)


def apply(model: Any, spec: Spec, ctx: Any, name: str = "parallel_adapter") -> Any:
    """``name``: the submodule name (the MAM adapter reuses this under its own name)."""
    from autopeft.methods._modules import add_bottlenecks

    add_bottlenecks(unwrap(model), ctx, name, ["ffn_out"], spec.layers,
                    spec.bottleneck_size(ctx.hidden_size), "beside", spec.activation,
                    float(spec.scaling))
    return model


METHOD = Method(name="parallel_adapter", category="additive", spec=Spec, apply=apply,
                summary="parallel adapter: scaled bottleneck beside the FFN")
