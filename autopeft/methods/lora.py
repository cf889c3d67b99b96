"""LoRA (Hu et al., 2021) through peft: low-rank updates W + (alpha/r) B A.

Placement: ``targets`` (roles, see ``arch.py``) in ``layers``. Per-layer ranks with
``rank_pattern`` (layer index -> rank); DoRA with ``use_dora``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import (alpha_field, attach_peft, dropout_field, exact_regex,
                                      in_unit_interval, layers_field, placement, positive,
                                      target_modules, targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    r: int = field(default=8, metadata={
        "help": "rank of each update B A (Hu et al.'s GLUE runs: 8, on query and value)"})
    alpha: float = alpha_field(16.0)
    dropout: float = dropout_field()
    targets: list[str] = targets_field(("query", "value"))
    layers: Any = layers_field()
    rank_pattern: dict[int, int] = field(default_factory=dict, metadata={
        "help": "per-layer ranks, {layer index: rank}, overriding r there"})
    use_dora: bool = field(default=False, metadata={
        "help": "DoRA (Liu et al., 2024): also learn a magnitude vector per target"})

    def __post_init__(self) -> None:
        if not isinstance(self.r, int):
            raise UserError(f"lora: r must be an integer, got {self.r!r}")
        positive("r", self.r, "lora")
        positive("alpha", self.alpha, "lora")
        in_unit_interval("dropout", self.dropout, "lora")
        placement("lora", self.layers, self.targets)
        self.rank_pattern = {int(k): int(v) for k, v in self.rank_pattern.items()}
        for layer, rank in self.rank_pattern.items():
            positive(f"rank_pattern[{layer}]", rank, "lora")


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import LoraConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "lora")
    rank_pattern = {}
    for name in names:
        layer = ctx.arch.layer_of(name)[0]
        if layer in spec.rank_pattern:
            rank_pattern[exact_regex([name])] = spec.rank_pattern[layer]
    rank = max([spec.r, *rank_pattern.values()])
    for name in names:
        limit = min(model.get_submodule(name).weight.shape)
        if rank > limit:
            raise UserError(f"lora: rank {rank} is larger than module {name} allows ({limit}); "
                            "lower r")
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=exact_regex(names), rank_pattern=rank_pattern,
                      use_dora=spec.use_dora)


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx)


METHOD = Method(name="lora", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True, summary="LoRA: low-rank weight updates (DoRA option)")
