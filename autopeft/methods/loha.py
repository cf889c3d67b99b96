"""LoHa (Hyeon-Woo et al., 2022, FedPara) through peft: the update is the Hadamard product
of two low-rank products, ``(W1a W1b) * (W2a W2b) * alpha / r``, which reaches rank r^2 for
the cost of two rank-r pairs.

Trainable per module of shape (out, in): ``2 * r * (out + in)`` (plus the task head).
peft's LoHa wraps ``nn.Linear`` only, not GPT-2's ``Conv1D``: encoders, T5 and LLaMA-style
decoders work, GPT-2 is refused with a message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.methods._common import (attach_peft, exact_regex, in_unit_interval, linear_only,
                                      placement, positive, positive_int, target_modules, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    r: int = 8
    alpha: float = 8.0
    rank_dropout: float = 0.0  # drops rank components of the update during training
    module_dropout: float = 0.0  # drops the whole update of a module during training
    targets: list[str] = field(default_factory=lambda: ["query", "value"])
    layers: Any = "all"

    def __post_init__(self) -> None:
        positive_int("r", self.r, "loha")
        positive("alpha", self.alpha, "loha")
        in_unit_interval("rank_dropout", self.rank_dropout, "loha")
        in_unit_interval("module_dropout", self.module_dropout, "loha")
        placement("loha", self.layers, self.targets)


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import LoHaConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "loha")
    linear_only(model, names, "loha")
    return LoHaConfig(r=spec.r, alpha=spec.alpha, rank_dropout=spec.rank_dropout,
                      module_dropout=spec.module_dropout, target_modules=exact_regex(names))


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx, "loha")


METHOD = Method(name="loha", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True, families=("encoder", "encoder-decoder"),
                summary="LoHa: Hadamard product of two low-rank updates")
