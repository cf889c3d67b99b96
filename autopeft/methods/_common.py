"""Small helpers shared by method modules (placement checks, freezing, peft glue)."""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autopeft.arch import LAYER_SETS, ROLES, Arch, check_placement, resolve_layers
from autopeft.contract import (count_entries_as, count_stored_as, entry_counts,  # noqa: F401
                               learning_rates, set_lr, stored_counts, unwrap)
from autopeft.errors import UserError


@dataclass
class BuildContext:
    """What a method may know about the model it is applied to."""

    arch: Arch
    num_layers: int
    model_name: str = ""
    total_steps: int | None = None  # optimiser steps the candidate will train (AdaLoRA needs it)
    peft_task_type: str = "SEQ_CLS"  # CAUSAL_LM / SEQ_2_SEQ_LM for language-model tasks
    hidden_size: int = 0  # width of the residual stream (bottleneck sizes are relative to it)
    device: str | None = None  # where it will train (QLoRA quantises there); None: where it is
    # id of a copy's stand-in parameter -> (it, the base's parameter): ``Method.replaces``
    originals: dict[int, Any] = field(default_factory=dict)


def positive(name: str, value: Any, method: str) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise UserError(f"{method}: {name} must be a positive number, got {value!r}")


def in_unit_interval(name: str, value: Any, method: str) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise UserError(f"{method}: {name} must be in [0, 1), got {value!r}")


def one_of(name: str, value: Any, options: tuple[str, ...], method: str) -> None:
    if value not in options:
        raise UserError(f"{method}: {name} must be one of {', '.join(options)}, got {value!r}")


def positive_int(name: str, value: Any, method: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise UserError(f"{method}: {name} must be a positive integer, got {value!r}")


def layers_field(what: str = "layers whose target modules are adapted") -> Any:
    """The ``layers`` placement field (default ``all``), its help saying what it places."""
    return field(default="all", metadata={
        "help": f"{what}: {'|'.join(LAYER_SETS)} or a list of 0-based indices"})


def targets_field(roles: Sequence[str], what: str = "modules to adapt") -> Any:
    """A list-of-roles field (default ``roles``), its help listing the roles there are."""
    return field(default_factory=lambda: list(roles),
                 metadata={"help": f"{what}, as roles: any of {', '.join(ROLES)}"})


def alpha_field(default: float, note: str = "") -> Any:
    """The ``alpha`` scale field of the low-rank methods (``note``: e.g. the paper's value)."""
    return field(default=default, metadata={
        "help": f"scale numerator: the update is multiplied by alpha / r, > 0{note}"})


def dropout_field() -> Any:
    """The ``dropout`` field (default 0) of the low-rank methods."""
    return field(default=0.0, metadata={
        "help": "dropout probability on the update's input in training, [0, 1)"})


ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "identity")


@dataclass
class BottleneckFields:
    """Size and non-linearity of a bottleneck (down-project, activate, up-project), shared by
    the serial and parallel adapters and the hybrids. ``bottleneck`` (a width) overrides
    ``reduction_factor`` (hidden size / width), so one space can fix either."""

    reduction_factor: int = field(default=16, metadata={
        "help": "bottleneck width = hidden size / reduction_factor (AdapterHub's default 16)"})
    bottleneck: int | None = field(default=None, metadata={
        "help": "bottleneck width (neurons); overrides reduction_factor (None: use it)"})
    activation: str = field(default="relu", metadata={
        "help": f"non-linearity between down and up: {' | '.join(ACTIVATIONS)} (the papers' relu)"})

    def check_bottleneck(self, method: str) -> None:
        positive_int("reduction_factor", self.reduction_factor, method)
        if self.bottleneck is not None:
            positive_int("bottleneck", self.bottleneck, method)
        one_of("activation", self.activation, ACTIVATIONS, method)

    def bottleneck_size(self, hidden_size: int) -> int:
        return self.bottleneck or max(1, hidden_size // self.reduction_factor)


@dataclass
class LycorisFields:
    """Rank, scale and the two dropouts of peft's LyCORIS methods (LoHa, LoKr)."""

    r: int = field(default=8, metadata={"help": "rank of each low-rank factor (peft's default 8)"})
    alpha: float = alpha_field(8.0, " (peft's default 8)")
    rank_dropout: float = field(default=0.0, metadata={
        "help": "probability of dropping a rank component of the update in training, [0, 1)"})
    module_dropout: float = field(default=0.0, metadata={
        "help": "probability of dropping a module's whole update in training, [0, 1)"})

    def check_lycoris(self, method: str) -> None:
        positive_int("r", self.r, method)
        positive("alpha", self.alpha, method)
        in_unit_interval("rank_dropout", self.rank_dropout, method)
        in_unit_interval("module_dropout", self.module_dropout, method)

    def lycoris_kwargs(self) -> dict[str, Any]:
        return dict(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                    module_dropout=self.module_dropout)


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


def attach_peft(model: Any, config: Any, ctx: BuildContext, method: str = "") -> Any:
    """Add a peft adapter: wrap with ``get_peft_model`` the first time (so the result saves
    in peft's format, task head included), inject beside it for a later peft method.

    Prompt-learning configs (prefix, prompt, P-tuning) cannot be injected: they must be the
    outer ``PeftModel``, which is why ``build`` applies them first. Injecting freezes every
    parameter but the new adapter's and deactivates the head's trainable copy: what was
    trainable and active before is made so again.
    """
    from peft import PeftModel, get_peft_model, inject_adapter_in_model

    if isinstance(model, PeftModel):
        if config.is_prompt_learning:
            raise UserError(f"{method or config.peft_type}: prompt-learning methods must come "
                            "first in a candidate (they wrap the model); one per candidate")
        trainable = [p for p in model.parameters() if p.requires_grad]
        active = _active_adapters(model)
        name = f"m{len(model.peft_config)}"
        inject_adapter_in_model(config, model.get_base_model(), adapter_name=name)
        _restore_active_adapters(active, name)
        for pname, param in model.named_parameters():
            if f".{name}." in pname or pname.endswith(f".{name}"):
                param.requires_grad_(True)
        for param in trainable:
            param.requires_grad_(True)
        return model
    trainable = [p for p in model.parameters() if p.requires_grad]
    config.task_type = ctx.peft_task_type
    config.modules_to_save = ctx.arch.head_names(model) or None
    with warnings.catch_warnings():  # peft 0.21 reads a name transformers 5 deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        wrapped = get_peft_model(model, config)
    for param in trainable:  # e.g. a hybrid's own modules added before (none in build order)
        param.requires_grad_(True)
    return wrapped


def _active_adapters(model: Any) -> dict[Any, list[str]]:
    """Active adapter names of every peft layer and head wrapper (``modules_to_save``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return {m: list(m.active_adapters) for m in model.modules()
            if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))}


def _restore_active_adapters(before: dict[Any, list[str]], new: str) -> None:
    """Undo what injecting adapter ``new`` did to earlier adapters. Observed with peft
    0.21.2: the task head's ``modules_to_save`` wrapper is left with no active adapter, so
    its forward silently falls back to the frozen original head and the trainable copy
    never trains (earlier LoRA layers stayed active). Restoring every layer is cheap."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    for module, names in before.items():
        if isinstance(module, AuxiliaryTrainingWrapper):
            module.set_adapter(names)  # one adapter at most
        else:
            module.set_adapter(names + ([new] if new in module.active_adapters else []))


def linear_only(model: Any, names: list[str], method: str) -> None:
    """For peft methods that wrap ``nn.Linear`` but not GPT-2's fused ``Conv1D`` (LoHa, LoKr)."""
    for name in names:
        module = model.get_submodule(name)
        if type(module).__name__ == "Conv1D":
            raise UserError(f"{method}: peft's {method} cannot wrap {name} (GPT-2's Conv1D, not "
                            "nn.Linear); use lora, ia3 or vera on this model")
