"""Check a search space against the model before any trial trains.

Some mistakes only show with the model at hand: a LoRA rank larger than a layer, a
placement that selects no module, BitFit on a model without biases. Each candidate entry
and each parameter value (every choice, both ends of a range) is built once on a
*meta-device* skeleton of the model (shapes only, no memory, no weights), so the check
costs well under a second. Entries that cannot apply to this model at all are dropped
with a note giving the reason, so one space serves every family and task kind: BitFit on
LLaMA or T5 (no biases), prompt methods on a decoder's or T5's classification model (their
language models, for generation tasks, train them). A parameter value that cannot be built
stops the search with one line naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from autopeft.arch import arch_for, num_layers
from autopeft.build import build, context_for
from autopeft.candidate import Candidate, MethodSpec
from autopeft.errors import UserError
from autopeft.methods import get_method
from autopeft.methods.registry import check_model_kind
from autopeft.space import Space


def skeleton(model: Any) -> Any:
    """A weightless copy of ``model``'s architecture on the meta device."""
    import torch

    with torch.device("meta"):
        return type(model)(model.config)


def with_layer_count(space: Space, n: int) -> Space:
    """Per-layer placements (``layers: {per_layer: true}``) get the model's layer count."""
    methods = {name: {p: (dataclasses.replace(param, value=n) if param.kind == "per_layer" else param)
                      for p, param in params.items()}
               for name, params in space.methods.items()}
    return dataclasses.replace(space, methods=methods)


def fit_space(space: Space, model: Any) -> tuple[Space, list[str]]:
    """The space restricted to entries this model can train, and a note per dropped entry.

    Raises ``UserError`` naming the place for a value that cannot be built."""
    meta = skeleton(model)
    space = with_layer_count(space, num_layers(model.config))
    kept, notes = {}, []
    family = arch_for(model.config).family
    classification = context_for(model).peft_task_type == "SEQ_CLS"
    for entry, overrides in space.candidates.items():
        try:
            for name in entry.split("+"):
                check_model_kind(get_method(name), family, classification)
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
