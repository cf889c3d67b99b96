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
from autopeft.methods._common import (attach_peft, exact_regex, in_unit_interval, placement,
                                      positive, positive_int, target_modules, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    r: int = 256  # the paper's and peft's default: the shared matrices are free to make wide
    d_initial: float = 0.1  # initial value of the d vectors (b starts at zero)
    dropout: float = 0.0
    projection_prng_key: int = 0
    targets: list[str] = field(default_factory=lambda: ["query", "value"])
    layers: Any = "all"

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
