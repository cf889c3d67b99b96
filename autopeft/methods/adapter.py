"""Serial bottleneck adapter, in the two published configurations (AdapterHub's
``HoulsbyConfig`` and ``PfeifferConfig``), ``f(x) = up(act(down(x)))``, ``up`` starting at 0.

* ``houlsby`` (Houlsby et al., 2019): an adapter on the attention output and one on the FFN
  output, each ``h + f(h)`` before the sub-layer's residual add and LayerNorm; the layer
  norms of the adapted layers train too, as in the paper (AdapterHub freezes them).
* ``pfeiffer`` (Pfeiffer et al., 2021): one adapter per layer after the FFN, reading the
  sub-layer's output *after* its residual add and LayerNorm and adding before that norm
  (``original_ln_before``, ``residual_before_ln``): post-LN ``LN(s + f(LN(s)))``; pre-LN
  models have no norm there: ``x + f(x)`` on the layer output. See ``_modules.AfterFfn``.

Activation: ReLU (Pfeiffer's config; AdapterHub's Houlsby config uses swish: ``silu``).
peft has no bottleneck adapters, so this is our own module (``_modules.Bottleneck``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods import _common
from autopeft.methods._common import BottleneckFields, layers_field, one_of, unwrap
from autopeft.methods.registry import Method

PLACEMENTS = ("houlsby", "pfeiffer")


@dataclass
class Spec(BottleneckFields):
    placement: str = field(default="pfeiffer", metadata={
        "help": "pfeiffer: one adapter after the FFN's LayerNorm | houlsby: on attention and "
                "FFN outputs, layer norms train"})
    layers: Any = layers_field("layers that get an adapter")

    def __post_init__(self) -> None:
        self.check_bottleneck("adapter")
        one_of("placement", self.placement, PLACEMENTS, "adapter")
        _common.placement("adapter", self.layers)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.arch import resolve_layers
    from autopeft.methods._modules import add_bottlenecks

    inner = unwrap(model)
    size = spec.bottleneck_size(ctx.hidden_size)
    if spec.placement == "pfeiffer":
        add_bottlenecks(inner, ctx, "adapter", [], spec.layers, size, "after_ffn", spec.activation)
        return model
    add_bottlenecks(inner, ctx, "adapter", ["attn_out", "ffn_out"], spec.layers, size, "serial",
                    spec.activation)
    for name in ctx.arch.find_paths(inner, ctx.arch.norms,
                                    resolve_layers(spec.layers, ctx.num_layers)):
        inner.get_submodule(name).requires_grad_(True)
    return model


METHOD = Method(name="adapter", category="additive", spec=Spec, apply=apply,
                summary="serial bottleneck adapter: pfeiffer (after the FFN's LayerNorm) or "
                        "houlsby (attention + FFN, layer norms train)")
