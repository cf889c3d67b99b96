"""Check a search space against the model before any trial trains.

Some mistakes only show with the model at hand: a LoRA rank larger than a layer, a
placement that selects no module, BitFit on a model without biases. Each candidate entry
and each parameter value (every choice, both ends of a range) is built once on a
*meta-device* skeleton of the model (shapes only, no memory, no weights), so the check
costs well under a second. Entries that cannot apply to this model at all (BitFit on
LLaMA) are dropped with a note, so one space serves every family; a parameter value that
cannot be built stops the search with one line naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from autopeft.build import build
from autopeft.candidate import Candidate, MethodSpec
from autopeft.errors import UserError
from autopeft.space import Space


def skeleton(model: Any) -> Any:
    """A weightless copy of ``model``'s architecture on the meta device."""
    import torch

    with torch.device("meta"):
        return type(model)(model.config)


def fit_space(space: Space, model: Any) -> tuple[Space, list[str]]:
    """The space restricted to entries this model can train, and a note per dropped entry.

    Raises ``UserError`` naming the place for a value that cannot be built."""
    meta = skeleton(model)
    kept, notes = {}, []
    for entry, overrides in space.candidates.items():
        try:
            build(meta, Candidate([MethodSpec(n) for n in entry.split("+")]))
            kept[entry] = overrides
        except UserError as exc:
            notes.append(f"skipping {entry} for this model: {exc}")
    if not kept:
        raise UserError(f"{space.source}: no candidate of this space applies to this model "
                        f"({'; '.join(notes)})")
    used = {m for entry in kept for m in entry.split("+")}
    for name, params in space.methods.items():
        if name not in used:
            continue
        for pname, param in params.items():
            for value in param.values():
                try:
                    build(meta, Candidate([MethodSpec(name, {pname: value})]))
                except UserError as exc:
                    raise UserError(f"{space.source}: methods.{name}.{pname}={value}: {exc}") from None
    return dataclasses.replace(space, candidates=kept), notes
