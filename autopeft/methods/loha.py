"""LoHa (Hyeon-Woo et al., 2022, FedPara) through peft: the update is the Hadamard product
of two low-rank products, ``(W1a W1b) * (W2a W2b) * alpha / r``, which reaches rank r^2 for
the cost of two rank-r pairs.

Trainable per module of shape (out, in): ``2 * r * (out + in)`` (plus the task head).
peft's LoHa wraps ``nn.Linear`` only, not GPT-2's ``Conv1D``: encoders, T5 and LLaMA-style
decoders work, GPT-2 is refused with a message.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.methods._common import (LycorisFields, attach_peft, exact_regex, layers_field,
                                      linear_only, placement, target_modules, targets_field,
                                      unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec(LycorisFields):
    targets: list[str] = targets_field(("query", "value"))
    layers: Any = layers_field()

    def __post_init__(self) -> None:
        self.check_lycoris("loha")
        placement("loha", self.layers, self.targets)


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import LoHaConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "loha")
    linear_only(model, names, "loha")
    return LoHaConfig(**spec.lycoris_kwargs(), target_modules=exact_regex(names))


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx, "loha")


METHOD = Method(name="loha", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True, families=("encoder", "encoder-decoder"),
                summary="LoHa: Hadamard product of two low-rank updates")
