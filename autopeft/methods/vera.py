"""VeRA (Kopiczko et al., 2024) through peft: one pair of random low-rank matrices
``A`` (r x in), ``B`` (out x r) shared by every adapted module and frozen; each module learns
only two scaling vectors, ``d`` (r) and ``b`` (out): ``delta W = diag(b) B diag(d) A``.

What the trainable-parameter objective counts: every tensor the optimiser updates, i.e.
``r + out`` per module (plus the task head). The shared ``A`` and ``B`` are buffers that
nobody updates, so they are not counted (as in peft's ``get_nb_trainable_parameters``);
they are drawn from ``projection_prng_key``, so a rebuild draws the same ones and
autopeft's saved form (trained tensors only) restores identical logits. peft's own saved
form stores them too (``save_projection``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import (attach_peft, dropout_field, exact_regex, in_unit_interval,
                                      layers_field, placement, positive, positive_int,
                                      target_modules, targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    r: int = field(default=256, metadata={
        "help": "rank of the shared frozen matrices (the paper's and peft's 256; costs only d)"})
    d_initial: float = field(default=0.1, metadata={
        "help": "starting value of every d vector, > 0 (b starts at zero; peft's default 0.1)"})
    dropout: float = dropout_field()
    projection_prng_key: int = field(default=0, metadata={
        "help": "seed of the shared random matrices, >= 0 (a rebuild draws the same ones)"})
    targets: list[str] = targets_field(("query", "value"))
    layers: Any = layers_field()

    def __post_init__(self) -> None:
        positive_int("r", self.r, "vera")
        positive("d_initial", self.d_initial, "vera")
        in_unit_interval("dropout", self.dropout, "vera")
        if not (isinstance(self.projection_prng_key, int) and self.projection_prng_key >= 0):
            raise UserError("vera: projection_prng_key must be a non-negative integer, got "
                            f"{self.projection_prng_key!r}")
        placement("vera", self.layers, self.targets)


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import VeraConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "vera")
    return VeraConfig(r=spec.r, d_initial=spec.d_initial, vera_dropout=spec.dropout,
                      projection_prng_key=spec.projection_prng_key,
                      target_modules=exact_regex(names))


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    return attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx, "vera")


METHOD = Method(name="vera", category="reparameterized", spec=Spec, apply=apply, engine="peft",
                peft_native=True,
                summary="VeRA: frozen shared random matrices, learned scaling vectors")
