"""Small helpers shared by method modules (placement checks, freezing, peft glue)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autopeft.arch import Arch, check_placement, resolve_layers
from autopeft.errors import UserError


@dataclass
class BuildContext:
    """What a method may know about the model it is applied to."""

    arch: Arch
    num_layers: int
    model_name: str = ""
    total_steps: int | None = None  # optimiser steps the candidate will train (AdaLoRA needs it)


def positive(name: str, value: Any, method: str) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise UserError(f"{method}: {name} must be a positive number, got {value!r}")


def in_unit_interval(name: str, value: Any, method: str) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise UserError(f"{method}: {name} must be in [0, 1), got {value!r}")


def placement(method: str, layers: Any, targets: Any = None) -> None:
    try:
        check_placement(layers, targets)
    except UserError as exc:
        raise UserError(f"{method}: {exc}") from None


def target_modules(model: Any, ctx: BuildContext, targets: list[str], layers: Any,
                   method: str) -> list[str]:
    """Module names for a placement; a placement that selects nothing is a user error."""
    names = ctx.arch.find(model, targets, resolve_layers(layers, ctx.num_layers))
    if not names:
        raise UserError(f"{method}: targets {targets} in layers {layers!r} select no module "
                        f"of this {ctx.arch.family} model")
    return names


def exact_regex(names: list[str]) -> str:
    """A regex peft full-matches against module names: exactly these modules, no others."""
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def unwrap(model: Any) -> Any:
    """The transformers model inside a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def attach_peft(model: Any, config: Any, ctx: BuildContext) -> Any:
    """Add a peft adapter: wrap with ``get_peft_model`` the first time (so the result saves
    in peft's format, task head included), inject beside it for a second peft method."""
    from peft import PeftModel, get_peft_model, inject_adapter_in_model

    if isinstance(model, PeftModel):
        name = f"m{len(model.peft_config)}"
        inject_adapter_in_model(config, model.get_base_model(), adapter_name=name)
        for pname, param in model.named_parameters():
            if f".{name}." in pname or pname.endswith(f".{name}"):
                param.requires_grad_(True)
        return model
    config.task_type = "SEQ_CLS"
    config.modules_to_save = ctx.arch.head_names(model)
    return get_peft_model(model, config)
