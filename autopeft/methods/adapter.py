"""Serial bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2021): ``h + f(h)``
on a sub-layer's output, before its residual connection and normalisation.

``placement``: ``houlsby`` after the attention output and after the FFN output;
``pfeiffer`` after the FFN output only. peft has no bottleneck adapters, so this is our
own module (``_modules.Bottleneck``), hooked onto the ``attn_out`` / ``ffn_out`` roles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.methods import _common
from autopeft.methods._common import BottleneckFields, one_of, unwrap
from autopeft.methods.registry import Method

ROLES = {"houlsby": ["attn_out", "ffn_out"], "pfeiffer": ["ffn_out"]}


@dataclass
class Spec(BottleneckFields):
    placement: str = "pfeiffer"  # houlsby | pfeiffer
    layers: Any = "all"

    def __post_init__(self) -> None:
        self.check_bottleneck("adapter")
        one_of("placement", self.placement, tuple(ROLES), "adapter")
        _common.placement("adapter", self.layers)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.methods._modules import add_bottlenecks

    add_bottlenecks(unwrap(model), ctx, "adapter", ROLES[spec.placement], spec.layers,
                    spec.bottleneck_size(ctx.hidden_size), "serial", spec.activation)
    return model


METHOD = Method(name="adapter", category="additive", spec=Spec, apply=apply,
                summary="serial bottleneck adapter (Houlsby or Pfeiffer placement)")
