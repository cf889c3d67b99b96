"""ProPETL (Zeng et al., 2023, "One Network, Many Masks"): one prototype PETL module shared
by every layer; each layer applies its own binary mask to the prototype's weights, so
layers use different sub-networks of one small set of weights. Follows the reference code
(github.com/ChaosCodes/ProPETL, RoBERTa part):

* masks: real-valued scores of the weights' shapes, Kaiming-uniform initialised; a layer's
  mask keeps the top ``1 - sparsity`` share of ``|scores|`` (hard 0/1 forward) and the
  straight-through estimator passes the mask's gradient to the scores (the reference's
  ``GetSubnet``; its ``sparsity`` is the share *kept*, ours the share dropped);
* scores train at their own learning rate ``mask_lr`` (the reference's
  ``--mask_learning_rate``: 3e-3 for the adapter, 3e-2 for LoRA) in their own optimiser
  group, whatever the candidate's learning rate (the prototype's);
* ``variant="adapter"`` (default): a Pfeiffer adapter (the reference's ``pfeiffer``
  config), placed after the FFN's LayerNorm (``_modules.AfterFfn``); biases shared
  unmasked; ``up`` starts at 0, so a fresh model computes what the base model computes;
* ``variant="lora"``: one LoRA prototype (``A``: r x in, ``B``: out x r, ``B`` at 0) per
  target role shared by the layers, scaled ``alpha / r``, masked per layer and module
  (reference defaults r 32, alpha 48, 10% of the entries kept: sparsity 0.9). The paper
  shares the LoRA prototype across layers; the released RoBERTa code appears to keep one
  LoRA per layer (``add_shared_adapter -> add_adapter``): we follow the paper;
* the reference's prefix variant is not offered (peft builds the prefix; masking its
  per-layer values would need our own prefix implementation).

Counts: the prototype and the per-layer scores train (32-bit each); what a user stores is
the prototype plus the masks as bits, ``ceil(entries / 32)`` 32-bit-parameter equivalents
per mask tensor (``_common.count_stored_as``), the search's parameter objective.

The prototype lives on the transformers model as ``propetl``; each layer's (adapter) or
module's (LoRA) scores live there as ``propetl_mask``, so a placement's tensors are found
in its layers, and the saved form (every trained tensor) restores the masks exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import (BottleneckFields, alpha_field, count_stored_as,
                                      in_unit_interval, layers_field, one_of, placement, positive,
                                      positive_int, set_lr, target_modules, targets_field, unwrap)
from autopeft.methods.registry import Method

# The reference's settings per variant (scripts/run_adapter.sh, run_lora.sh).
DEFAULTS = {"adapter": {"sparsity": 0.5, "mask_lr": 3e-3},
            "lora": {"sparsity": 0.9, "mask_lr": 3e-2}}


@dataclass
class Spec(BottleneckFields):
    variant: str = field(default="adapter", metadata={
        "help": "the shared prototype: adapter (Pfeiffer-placed) | lora (one per target role)"})
    sparsity: float | None = field(default=None, metadata={
        "help": "share of prototype weights each mask drops, [0, 1) (None: adapter 0.5, lora 0.9)"})
    mask_lr: float | None = field(default=None, metadata={
        "help": "learning rate of the mask scores (None: the reference's 3e-3 adapter, 3e-2 lora)"})
    r: int = field(default=32, metadata={"help": "lora variant: the prototype's rank (the "
                                                 "reference's 32)"})
    alpha: float = alpha_field(48.0, " (lora variant; the reference's 48)")
    targets: list[str] = targets_field(("query", "value"), "lora variant: modules to adapt")
    layers: Any = layers_field("layers that each mask the prototype")

    def __post_init__(self) -> None:
        self.check_bottleneck("propetl")
        one_of("variant", self.variant, tuple(DEFAULTS), "propetl")
        if self.sparsity is not None:
            in_unit_interval("sparsity", self.sparsity, "propetl")
        if self.mask_lr is not None:
            positive("mask_lr", self.mask_lr, "propetl")
        positive_int("r", self.r, "propetl")
        positive("alpha", self.alpha, "propetl")
        placement("propetl", self.layers, self.targets)

    def setting(self, name: str) -> float:
        value = getattr(self, name)
        return DEFAULTS[self.variant][name] if value is None else value


def _modules() -> tuple[type, type, type]:
    """The torch modules, defined on first use so that the spec imports without torch."""
    import torch
    from torch import nn

    from autopeft.methods._modules import AfterFfn

    class Masks(nn.Module):
        """One layer's scores over some prototype weights; ``masks()`` gives their masks."""

        def __init__(self, weights: list[torch.Tensor], sparsity: float) -> None:
            super().__init__()
            self.scores = nn.ParameterList()
            for w in weights:
                s = nn.Parameter(torch.empty(w.shape, device=w.device))
                if s.device.type != "meta":
                    nn.init.kaiming_uniform_(s, a=math.sqrt(5))
                self.scores.append(s)
            self.sparsity = sparsity

        def mask(self, scores: torch.Tensor) -> torch.Tensor:
            """Hard top-k of ``|scores|`` forward, identity gradient (straight-through)."""
            magnitude = scores.abs()
            k = max(1, round((1 - self.sparsity) * scores.numel()))
            hard = torch.zeros_like(magnitude).flatten()
            hard[torch.topk(magnitude.flatten(), k).indices] = 1.0
            # (m - m.detach()) is exactly 0: the forward mask stays exactly 0/1
            return hard.view_as(scores) + (magnitude - magnitude.detach())

        def masks(self) -> list[torch.Tensor]:
            return [self.mask(s) for s in self.scores]

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

    class AdapterMask(AfterFfn, Masks):
        """One layer's masks over the prototype adapter, and its forward (``AfterFfn`` hooks)."""

        def __init__(self, prototype: Prototype, sparsity: float) -> None:
            super().__init__([prototype.down.weight, prototype.up.weight], sparsity)
            object.__setattr__(self, "prototype", prototype)  # shared: not a submodule here

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            p = self.prototype
            down, up = self.masks()
            z = p.act(nn.functional.linear(h.to(p.down.weight.dtype), p.down.weight * down,
                                           p.down.bias))
            return nn.functional.linear(z, p.up.weight * up, p.up.bias)

    class LoraMask(Masks):
        """One module's masks over its role's LoRA prototype, added beside the module."""

        def __init__(self, a: nn.Parameter, b: nn.Parameter, scaling: float,
                     sparsity: float) -> None:
            super().__init__([a, b], sparsity)
            object.__setattr__(self, "prototype", (a, b))
            self.scaling = scaling

        def parallel_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            (a, b), (ma, mb) = self.prototype, self.masks()
            x = args[0].to(a.dtype)
            return output + (x @ (a * ma).T @ (b * mb).T * self.scaling).to(output.dtype)

    return Prototype, AdapterMask, LoraMask


def _register(model: Any, masks: Any, lr: float) -> None:
    for scores in masks.scores:
        count_stored_as(model, scores, math.ceil(scores.numel() / 32))
        set_lr(model, scores, lr)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    import torch
    from torch import nn

    from autopeft.methods._modules import after_ffn_hosts, dims

    inner = unwrap(model)
    sparsity, lr = spec.setting("sparsity"), spec.setting("mask_lr")
    Prototype, AdapterMask, LoraMask = _modules()
    ref = next(inner.parameters())
    if spec.variant == "adapter":
        hosts = after_ffn_hosts(inner, ctx, spec.layers)
        if not hosts:
            raise UserError(f"propetl: no FFN in layers {spec.layers!r} of this model")
        hidden = ctx.hidden_size
        prototype = Prototype(hidden, spec.bottleneck_size(hidden), spec.activation)
        inner.add_module("propetl", prototype.to(device=ref.device))
        for name, kind in hosts:
            mask = AdapterMask(prototype, sparsity).to(device=ref.device)
            layer = name if kind == "layer" else ctx.arch.layer_path(name)
            inner.get_submodule(layer).add_module("propetl_mask", mask)
            mask.attach_after_ffn(inner.get_submodule(name), kind)
            _register(model, mask, lr)
        return model
    prototypes = nn.ParameterDict()
    inner.add_module("propetl", prototypes)
    seen: set[str] = set()  # GPT-2's fused c_attn plays query, key and value: one LoRA
    for role in spec.targets:
        names = [n for n in target_modules(inner, ctx, [role], spec.layers, "propetl")
                 if n not in seen]
        if not names:
            continue
        seen.update(names)
        d_in, d_out = dims(inner.get_submodule(names[0]))
        if spec.r > min(d_in, d_out):
            raise UserError(f"propetl: rank {spec.r} is larger than {role} ({d_in} -> {d_out})")
        a = nn.Parameter(torch.empty(spec.r, d_in, device=ref.device))
        if a.device.type != "meta":
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        prototypes[f"{role}_A"] = a
        prototypes[f"{role}_B"] = nn.Parameter(torch.zeros(d_out, spec.r, device=ref.device))
        for name in names:
            mask = LoraMask(a, prototypes[f"{role}_B"], spec.alpha / spec.r, sparsity)
            host = inner.get_submodule(name)
            host.add_module("propetl_mask", mask.to(device=ref.device))
            host.register_forward_hook(mask.parallel_hook)
            _register(model, mask, lr)
    return model


# T5 has one FFN per block (encoder and decoder blocks of the same index both get a mask).
METHOD = Method(name="propetl", category="unified", spec=Spec, apply=apply,
                summary="ProPETL: one prototype (adapter or LoRA) shared by all layers, "
                        "per-layer binary masks (stored as bits)")
