"""ProPETL (Zeng et al., 2023): one prototype bottleneck adapter shared by every layer; each
layer uses its own binary mask over the prototype's weight matrices, so layers get different
sub-networks of one small set of weights.

The adapter is serial, on the output of each chosen layer's FFN output projection (role
``ffn_out``, before the residual add): ``h <- h + up(act(down(h)))`` with the layer's masked
``down``/``up`` weights (biases are shared unmasked). Masks are learned as in the paper: each
layer holds real-valued scores of the weights' shapes; its mask keeps the top
``1 - sparsity`` share of its scores (hard 0/1 forward), and the straight-through estimator
passes the mask's gradient to the scores unchanged. ``up`` starts at zero, so a fresh model
computes what the base model computes; scores start random, so layers start with different
sub-networks.

Masks are derived from score parameters, so autopeft's saved form (every trained tensor)
restores them exactly. The prototype lives on the transformers model as ``propetl``;
each layer's scores live in the layer (``<layer>.propetl_mask``), so a placement's tensors
are found in its layers.

Trainable parameters: the prototype (``2*H*b + b + H``) plus, per chosen layer, one score
per prototype weight entry (``2*H*b``), plus the task head. The paper stores a mask as bits
and counts it so; the optimiser updates 32-bit scores, and those are what we count. By this
count ProPETL costs about what one adapter per layer costs; its saving is in what an export
stores (the prototype and 1-bit masks), which the objective does not measure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import BottleneckFields, in_unit_interval, placement, unwrap
from autopeft.methods.registry import Method


@dataclass
class Spec(BottleneckFields):
    sparsity: float = 0.5  # share of the prototype's weights each layer's mask drops
    layers: Any = "all"

    def __post_init__(self) -> None:
        self.check_bottleneck("propetl")
        in_unit_interval("sparsity", self.sparsity, "propetl")
        placement("propetl", self.layers)


def _modules() -> tuple[type, type]:
    """The torch modules, defined on first use so that the spec imports without torch."""
    import torch
    from torch import nn

    class Prototype(nn.Module):
        """The shared bottleneck: weights masked per layer, biases shared."""

        def __init__(self, hidden: int, size: int, activation: str) -> None:
            super().__init__()
            self.down = nn.Linear(hidden, size)
            self.up = nn.Linear(size, hidden)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
            self.activation = activation

        def act(self, x: torch.Tensor) -> torch.Tensor:
            if self.activation == "identity":
                return x
            return getattr(nn.functional, self.activation)(x)

    class LayerMask(nn.Module):
        """One layer's scores over the prototype's weights, and the hook that applies them."""

        def __init__(self, prototype: Prototype, sparsity: float) -> None:
            super().__init__()
            self.down_scores = nn.Parameter(torch.rand_like(prototype.down.weight))
            self.up_scores = nn.Parameter(torch.rand_like(prototype.up.weight))
            self.sparsity = sparsity
            object.__setattr__(self, "prototype", prototype)  # shared: not a submodule here

        def mask(self, scores: torch.Tensor) -> torch.Tensor:
            """Hard top-k mask forward, identity gradient to the scores (straight-through)."""
            k = max(1, round((1 - self.sparsity) * scores.numel()))
            hard = torch.zeros_like(scores).flatten()
            hard[torch.topk(scores.flatten(), k).indices] = 1.0
            hard = hard.view_as(scores)
            return hard + scores - scores.detach()

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            p = self.prototype
            x = h.to(p.down.weight.dtype)
            down = p.down.weight * self.mask(self.down_scores)
            z = p.act(nn.functional.linear(x, down, p.down.bias))
            return nn.functional.linear(z, p.up.weight * self.mask(self.up_scores), p.up.bias)

        def hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return output + self(output).to(output.dtype)

    return Prototype, LayerMask


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.arch import resolve_layers

    inner = unwrap(model)
    names = ctx.arch.find(inner, ["ffn_out"], resolve_layers(spec.layers, ctx.num_layers))
    if not names:
        raise UserError(f"propetl: no FFN output in layers {spec.layers!r} of this model")
    hidden = ctx.hidden_size  # the FFN output projection writes the residual stream
    Prototype, LayerMask = _modules()
    prototype = Prototype(hidden, spec.bottleneck_size(hidden), spec.activation)
    ref = next(inner.get_submodule(names[0]).parameters())
    prototype.to(device=ref.device)
    inner.add_module("propetl", prototype)
    for name in names:
        mask = LayerMask(prototype, spec.sparsity).to(device=ref.device)
        inner.get_submodule(ctx.arch.layer_path(name)).add_module("propetl_mask", mask)
        inner.get_submodule(name).register_forward_hook(mask.hook)
    return model


# T5 has one FFN per block (encoder and decoder blocks of the same index both get a mask).
METHOD = Method(name="propetl", category="unified", spec=Spec, apply=apply,
                summary="ProPETL: one prototype adapter shared by all layers, per-layer masks")
