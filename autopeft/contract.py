"""The contract between PEFT methods and the training loop (a leaf: no project imports).

What a method may leave on a model, and what the loop, the counts and the optimiser read:

* **step hooks** (``register_step_hook``): work around the optimiser step (AdaLoRA's rank
  re-allocation, Child-Tuning's gradient masks) and before training (Child-Tuning D's
  Fisher pass);
* **per-tensor bookkeeping**: entries of a tensor that really train (``count_entries_as``),
  what a user stores of it (``count_stored_as``), its own learning rate (``set_lr``);
* **what trains**: ``trainable_parameters``, every tensor the optimiser updates.

Methods (``autopeft/methods``), the loop (``train.py``) and the counts (``build.py``) all
import from here, so none of them imports another for it.
"""
from __future__ import annotations

from typing import Any

HOOKS_ATTR = "autopeft_step_hooks"


def register_step_hook(model: Any, hook: Any) -> None:
    """``hook`` may define ``before_optimizer_step(step)`` and/or ``after_optimizer_step(step)``,
    and ``before_training(model, batches)``: called once before the first step with an
    iterator over one epoch of training batches (on the device), for methods that look at
    the data first (Child-Tuning D's Fisher pass); it takes no optimiser step.

    A hook that keeps state across steps (beyond the model's tensors and the random
    generators) defines ``state_dict()`` and ``load_state_dict(state)`` (tensors, numbers,
    strings, lists and dicts of them), so a run can be checkpointed and continued
    (``autopeft/checkpoint.py``); ``before_training`` is not called again on a continued
    run. A hook that cannot set ``can_continue = False``: its runs always train from step 0."""
    hooks = getattr(model, HOOKS_ATTR, None)
    if hooks is None:
        hooks = []
        object.__setattr__(model, HOOKS_ATTR, hooks)
    hooks.append(hook)


def trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    """Every tensor the optimiser updates (shared tensors once)."""
    seen, out = set(), []
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def unwrap(model: Any) -> Any:
    """The transformers model inside a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# Per-tensor bookkeeping a method leaves on the model for the counts and the optimiser.
# Kept as (parameter, value) pairs in attributes of the model, so a deep copy of the model
# carries them to the copied parameters. Always on the transformers model (``unwrap``), so
# a later peft wrapper does not hide them.
COUNTED_ATTR = "autopeft_counted_entries"
STORED_ATTR = "autopeft_stored_entries"
LR_ATTR = "autopeft_learning_rates"


def _pairs(model: Any, attr: str) -> list[tuple[Any, Any]]:
    inner = unwrap(model)
    pairs = getattr(inner, attr, None)
    if pairs is None:
        pairs = []
        object.__setattr__(inner, attr, pairs)
    return pairs


def count_entries_as(model: Any, param: Any, entries: int) -> None:
    """Count ``entries`` of ``param`` (not all of it) as trained: methods that let only part
    of a tensor change (Child-Tuning's gradient masks)."""
    _pairs(model, COUNTED_ATTR).append((param, int(entries)))


def count_stored_as(model: Any, param: Any, stored: int) -> None:
    """Count ``param`` as ``stored`` parameters in what a user keeps after training, in
    32-bit-parameter equivalents (a tensor kept as bits counts ``ceil(entries / 32)``;
    a training-only tensor, e.g. prefix tuning's MLP, counts 0). Tensors without an
    override are stored as they train (``entry_counts`` or whole)."""
    _pairs(model, STORED_ATTR).append((param, int(stored)))


def set_lr(model: Any, param: Any, lr: float) -> None:
    """Train ``param`` at its own learning rate ``lr`` (instead of the candidate's), e.g.
    ProPETL's mask scores; the trainer puts such tensors in their own optimiser group."""
    _pairs(model, LR_ATTR).append((param, float(lr)))


def _by_id(model: Any, attr: str) -> dict[int, Any]:
    return {id(p): v for p, v in getattr(unwrap(model), attr, ())}


def entry_counts(model: Any) -> dict[int, int]:
    """``id(parameter) -> trained entries`` for the tensors a method counts in part."""
    return _by_id(model, COUNTED_ATTR)


def stored_counts(model: Any) -> dict[int, int]:
    """``id(parameter) -> stored parameters`` for the tensors a method stores differently."""
    return _by_id(model, STORED_ATTR)


def learning_rates(model: Any) -> dict[int, float]:
    """``id(parameter) -> learning rate`` for the tensors a method trains at their own rate."""
    return _by_id(model, LR_ATTR)
