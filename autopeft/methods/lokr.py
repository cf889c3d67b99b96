"""LoKr (Yeh et al., 2024, LyCORIS) through peft: the update is a Kronecker product
``W1 (x) W2 * alpha / r``; each weight dimension is factored near its square root
(peft's ``factorization``), and the larger factor ``W2`` is itself low-rank
(``W2a W2b``) unless ``r`` is at least half its largest side.

Trainable per module of shape (out, in) = (l*k, m*n): ``l*m`` for ``W1``, plus ``k*n`` for a
full ``W2`` or ``r*(k+n)`` for a low-rank one (plus the task head). peft's LoKr wraps
``nn.Linear`` only, not GPT-2's ``Conv1D``: GPT-2 is refused with a message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import (LycorisFields, attach_peft, exact_regex, layers_field,
                                      linear_only, placement, positive_int, target_modules,
                                      targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec(LycorisFields):
    decompose_factor: int = field(default=-1, metadata={
        "help": "size of W1's sides when a dimension is factored (-1: near its square root)"})
    decompose_both: bool = field(default=False, metadata={
        "help": "make the smaller Kronecker factor W1 low-rank too"})
    targets: list[str] = targets_field(("query", "value"))
    layers: Any = layers_field()

    def __post_init__(self) -> None:
        self.check_lycoris("lokr")
        if self.decompose_factor != -1:
            positive_int("decompose_factor (or -1)", self.decompose_factor, "lokr")
        if not isinstance(self.decompose_both, bool):
            raise UserError("lokr: decompose_both must be true or false, got "
                            f"{self.decompose_both!r}")
        placement("lokr", self.layers, self.targets)


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import LoKrConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "lokr")
    linear_only(model, names, "lokr")
    return LoKrConfig(**spec.lycoris_kwargs(), decompose_factor=spec.decompose_factor,
                      decompose_both=spec.decompose_both, target_modules=exact_regex(names))


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx, "lokr")


METHOD = Method(name="lokr", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True, families=("encoder", "encoder-decoder"),
                summary="LoKr: Kronecker-product weight updates")
