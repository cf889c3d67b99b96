"""Check a search space against the model before any trial trains.

Some mistakes only show with the model at hand: a LoRA rank larger than a layer, a
placement that selects no module, BitFit on a model without biases. Each method and each
parameter value (every choice, both ends of a range) is built once on a *meta-device*
skeleton of the model (shapes only, no memory, no weights), so the check costs well under a
second and a bad space stops with one line instead of failing trial after trial.
"""
from __future__ import annotations

from typing import Any

from autopeft.build import build
from autopeft.candidate import Candidate, MethodSpec
from autopeft.errors import UserError
from autopeft.space import Space


def skeleton(model: Any) -> Any:
    """A weightless copy of ``model``'s architecture on the meta device."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(model.config)


def check_space_fits(space: Space, model: Any) -> None:
    """Raise ``UserError`` naming the space, the place and the value that cannot be built."""
    meta = skeleton(model)
    for entry in space.candidates:
        try:
            build(meta, Candidate([MethodSpec(n) for n in entry.split("+")]))
        except UserError as exc:
            raise UserError(f"{space.source}: candidates.{entry}: {exc}") from None
    for name, params in space.methods.items():
        for pname, param in params.items():
            for value in param.values():
                try:
                    build(meta, Candidate([MethodSpec(name, {pname: value})]))
                except UserError as exc:
                    raise UserError(f"{space.source}: methods.{name}.{pname}={value}: {exc}") from None
