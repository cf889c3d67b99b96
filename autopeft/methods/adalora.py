"""AdaLoRA (Zhang et al., 2023) through peft: SVD-shaped LoRA updates ``B diag(E) A`` whose
rank budget is re-allocated during training, from ``init_r`` per module down to an average
of ``target_r``, by pruning the least important singular values.

The schedule is relative to the candidate's length (``ctx.total_steps``, which ``build``
passes for training; a model built without it, e.g. to check a space or load trained
weights, refuses to train): the first ``warmup_ratio`` of the steps keep the full budget
(peft's ``tinit``), the budget then shrinks on a cubic schedule, and the last
``final_ratio`` fine-tune the final ranks (``tfinal``). peft's ``update_and_allocate`` scores importance from ``p * p.grad``
and must run "after ``optimizer.step()``, before ``zero_grad()``" (its docstring): a step
hook's ``after_optimizer_step``. It is given the number of optimiser steps taken so far
(1-based), so the last call of a run is ``total_steps``.

peft's ``AdaLoraModel.forward`` adds the orthogonality regulariser
(``orth_reg_weight * mean ||P P^T - I||``) to ``outputs.loss`` whenever labels are given,
so our loop's ``model(**batch).loss`` already includes it.

Trainable parameters: ``A`` (init_r x in), ``B`` (out x init_r) and ``E`` (init_r) per module,
all at ``init_r``: pruning zeroes entries of ``E`` but the optimiser still updates the full
tensors, so that is what the objective counts (plus the task head).

The rank allocator lives in peft's outer ``AdaLoraModel``: AdaLoRA must be the first peft
method of a candidate (injected beside another peft method it would have none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError
from autopeft.methods._common import (alpha_field, attach_peft, dropout_field, exact_regex,
                                      in_unit_interval, layers_field, placement, positive,
                                      positive_int, target_modules, targets_field, unwrap)
from autopeft.methods.registry import Method


@dataclass
class Spec:
    init_r: int = field(default=12, metadata={
        "help": "starting rank of each module, what trains and is counted (peft's default 12)"})
    target_r: int = field(default=8, metadata={
        "help": "average rank left after pruning, < init_r (peft's default 8)"})
    alpha: float = alpha_field(32.0, " (r: init_r, fixed as ranks are pruned)")
    dropout: float = dropout_field()
    targets: list[str] = targets_field(("query", "value"))
    layers: Any = layers_field()
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "share of the training steps at the full budget, [0, 1) (peft's tinit)"})
    final_ratio: float = field(default=0.2, metadata={
        "help": "share of the training steps at the final budget, [0, 1) (peft's tfinal)"})
    delta_t: int = field(default=1, metadata={
        "help": "re-allocate the rank budget every delta_t optimiser steps (peft's deltaT)"})
    orth_reg_weight: float = field(default=0.5, metadata={
        "help": "weight of the orthogonality regulariser on P and Q, >= 0 (peft's default 0.5)"})

    def __post_init__(self) -> None:
        positive_int("init_r", self.init_r, "adalora")
        positive_int("target_r", self.target_r, "adalora")
        if self.target_r >= self.init_r:
            raise UserError(f"adalora: target_r ({self.target_r}) must be smaller than init_r "
                            f"({self.init_r}): AdaLoRA prunes ranks from init_r down to target_r")
        positive("alpha", self.alpha, "adalora")
        in_unit_interval("dropout", self.dropout, "adalora")
        in_unit_interval("warmup_ratio", self.warmup_ratio, "adalora")
        in_unit_interval("final_ratio", self.final_ratio, "adalora")
        if self.warmup_ratio + self.final_ratio >= 1:
            raise UserError("adalora: warmup_ratio + final_ratio must be below 1 (no steps "
                            "would be left to re-allocate ranks)")
        positive_int("delta_t", self.delta_t, "adalora")
        if not (isinstance(self.orth_reg_weight, (int, float)) and self.orth_reg_weight >= 0):
            raise UserError(f"adalora: orth_reg_weight must be >= 0, got {self.orth_reg_weight!r}")
        placement("adalora", self.layers, self.targets)


# Built without a training length (checking a space on a meta skeleton, writing an export's
# config, loading trained weights): peft still wants a schedule, so it gets this nominal one,
# and training such a model is refused at its first step.
NOMINAL_STEPS = 1000


def schedule(spec: Spec, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) for a run of ``total_steps`` optimiser steps."""
    tinit = int(spec.warmup_ratio * total_steps)
    tfinal = int(spec.final_ratio * total_steps)
    # peft scores importance in the steps before total - tfinal and needs at least one of them
    # after tinit to shrink the budget; the allocation interval must fit in that phase.
    if total_steps - tfinal - tinit < max(2, spec.delta_t):
        raise UserError(f"adalora: {total_steps} training steps are too few for its schedule "
                        f"(warm-up {tinit}, final {tfinal}, interval {spec.delta_t}); train "
                        "longer or lower warmup_ratio/final_ratio/delta_t")
    return tinit, tfinal


def peft_config(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import AdaLoraConfig

    names = target_modules(model, ctx, spec.targets, spec.layers, "adalora")
    for name in names:
        limit = min(model.get_submodule(name).weight.shape)
        if spec.init_r > limit:
            raise UserError(f"adalora: init_r {spec.init_r} is larger than module {name} allows "
                            f"({limit}); lower init_r")
    total = ctx.total_steps or NOMINAL_STEPS
    tinit, tfinal = schedule(spec, total)
    return AdaLoraConfig(init_r=spec.init_r, target_r=spec.target_r, lora_alpha=spec.alpha,
                         lora_dropout=spec.dropout, target_modules=exact_regex(names),
                         total_step=total, tinit=tinit, tfinal=tfinal,
                         deltaT=spec.delta_t, orth_reg_weight=spec.orth_reg_weight)


class _Reallocate:
    """Step hook: peft's budget update and masking after each optimiser step."""

    def __init__(self, tuner: Any, scheduled: bool) -> None:
        self.tuner = tuner  # peft's AdaLoraModel
        self.scheduled = scheduled

    def before_optimizer_step(self, step: int) -> None:
        if not self.scheduled:
            raise UserError("adalora: this model was built without the number of training "
                            "steps (build(..., total_steps=N)), so its rank schedule is unknown")

    def after_optimizer_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step + 1)

    def state_dict(self) -> dict[str, Any]:
        """The rank allocator's importance averages and the rank pattern fixed so far:
        what a continued run needs (``autopeft/checkpoint.py``)."""
        alloc = self.tuner.rankallocator
        config = self.tuner.peft_config[self.tuner.trainable_adapter_name]
        return {"ipt": dict(alloc.ipt), "exp_avg_ipt": dict(alloc.exp_avg_ipt),
                "exp_avg_unc": dict(alloc.exp_avg_unc),
                "rank_pattern": {k: [bool(b) for b in v]
                                 for k, v in (config.rank_pattern or {}).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        alloc = self.tuner.rankallocator
        device = next(self.tuner.parameters()).device
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(alloc, key, {k: v.to(device) for k, v in state[key].items()})
        config = self.tuner.peft_config[self.tuner.trainable_adapter_name]
        config.rank_pattern = dict(state["rank_pattern"]) or None


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from peft import PeftModel

    from autopeft.contract import register_step_hook

    if isinstance(model, PeftModel):
        raise UserError("adalora: must be the first peft method of a candidate (peft keeps its "
                        "rank allocator in the outer model); it cannot join prefix/prompt "
                        "tuning or come after another peft method")
    wrapped = attach_peft(model, peft_config(unwrap(model), spec, ctx), ctx, "adalora")
    for name, param in wrapped.named_parameters():  # peft's rank counters are constants, but
        if ".ranknum." in name:  # built on a meta skeleton they come back trainable
            param.requires_grad_(False)  # (then --max-params would count them)
    register_step_hook(wrapped, _Reallocate(wrapped.base_model, ctx.total_steps is not None))
    return wrapped


def rank_budget(model: Any) -> int:
    """Singular values still in use (non-zero entries of every ``E``): the live rank budget."""
    return sum(int((p != 0).sum()) for n, p in model.named_parameters() if ".lora_E." in n)


METHOD = Method(name="adalora", category="reparameterized", spec=Spec, apply=apply,
                engine="peft", peft_native=True,
                summary="AdaLoRA: LoRA with its rank budget re-allocated during training")
