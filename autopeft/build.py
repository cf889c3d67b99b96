"""Candidate + base model -> trainable model. No optuna here.

The base model is never modified: each candidate gets a deep copy, so a candidate never
sees weights changed by a previous one, and the weights are read from disk once.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from autopeft.arch import arch_for, num_layers
from autopeft.candidate import Candidate
from autopeft.kinds import peft_task_type
from autopeft.methods import check_combination, get_method, make_spec
from autopeft.contract import entry_counts, stored_counts, trainable_parameters, unwrap  # noqa: F401
from autopeft.methods._common import BuildContext
from autopeft.models import (NEW_PARAMETERS_ATTR, import_bitsandbytes_quietly,
                             reinit_new_parameters)


def context_for(model: Any, total_steps: int | None = None) -> BuildContext:
    config = model.config
    arch = arch_for(config)
    task_type = peft_task_type(bool(arch.head_names(model)), arch.family)
    return BuildContext(arch=arch, num_layers=num_layers(config), peft_task_type=task_type,
                        model_name=str(getattr(config, "_name_or_path", "")),
                        total_steps=total_steps,
                        hidden_size=int(getattr(config, "hidden_size", 0) or 0))


def build(base: Any, candidate: Candidate, total_steps: int | None = None,
          frozen_dtype: Any = None, device: str | None = None) -> Any:
    """A fresh trainable copy of ``base`` with the candidate's methods applied.

    ``total_steps`` is how long it will train (methods with schedules, e.g. AdaLoRA).
    Everything new (the task head ``from_pretrained`` created, the methods' tensors) is drawn
    from the candidate's seed, so a candidate builds the same in every process; torch's
    CPU generator is left as it was (forking CUDA's too would start CUDA in processes that
    only build to count).

    ``frozen_dtype`` (bf16 training on CUDA): the copy is made in that dtype, so no fp32
    copy of the whole model is held next to the kept base (``_copy``); what trains gets
    fp32 master weights (``_master_weights``). What a method replaces from the base itself
    (QLoRA's 4-bit layers) is not copied at all. ``device``: where it will train (QLoRA
    quantises there), default where ``base`` is."""
    import torch

    import_bitsandbytes_quietly()  # before the methods import peft
    check_combination([m.name for m in candidate.methods])
    specs = [(get_method(m.name), make_spec(m.name, m.params)) for m in candidate.methods]
    base_ctx = replace(context_for(base, total_steps), device=device)
    real = not any(p.is_meta for p in base.parameters())
    replaced = {name for method, spec in specs if method.replaces and real
                for name in method.replaces(base, spec, base_ctx)}
    model, origin = _copy(base, frozen_dtype, replaced)
    ctx = replace(base_ctx, originals=origin)
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(candidate.seed)
        reinit_new_parameters(model)
        for method, spec in sorted(specs, key=lambda ms: ms[0].build_order):
            model = method.apply(model, spec, ctx)
    inner = unwrap(model)
    if inner is model:  # no peft wrapper: train the task head ourselves
        for head in ctx.arch.head_names(inner):
            inner.get_submodule(head).requires_grad_(True)
    _master_weights(model, origin)
    return model


def _copy(base: Any, frozen_dtype: Any, replaced: set[str]) -> tuple[Any, dict[int, Any]]:
    """``deepcopy(base)``, but parameters a method replaces from the base (``replaced``,
    ``Method.replaces``) become weightless placeholders, and with ``frozen_dtype`` the other
    fp32 parameters are copied in that dtype, except those ``build`` re-draws (the new head:
    drawn in fp32, as ever). Both pre-seeded in deepcopy's memo: tied weights stay tied.
    Returns the copy and, per placeholder or low-dtype parameter's id, ``(that parameter,
    the base's parameter it stands for)``."""
    import torch

    if frozen_dtype is None and not replaced:
        return copy.deepcopy(base), {}
    new = set(getattr(base, NEW_PARAMETERS_ATTR, ()))
    memo: dict[int, Any] = {}
    origin: dict[int, Any] = {}
    for name, p in base.named_parameters(remove_duplicate=False):
        if id(p) in memo:
            continue
        if name in replaced:
            stand = torch.empty(p.shape, dtype=p.dtype, device="meta")
        elif frozen_dtype is not None and name not in new and p.dtype == torch.float32:
            stand = p.detach().to(frozen_dtype)
        else:
            continue
        memo[id(p)] = low = torch.nn.Parameter(stand, requires_grad=False)
        origin[id(low)] = (low, p)  # the stand-in kept alive: its id is not reused
    return copy.deepcopy(base, memo), origin


def _master_weights(model: Any, origin: dict[int, Any]) -> None:
    """What trains keeps fp32 master weights after a low-dtype copy (``_copy``): a copied
    parameter that a method made trainable, or that a 4-bit model keeps unquantised (peft's
    k-bit preparation would up-cast the rounded values), gets the base's fp32 values back;
    a new trainable tensor peft made in the base layer's dtype (adapters, the head's
    ``modules_to_save`` copy) is up-cast (its initial values passed through bf16)."""
    import torch

    if not origin:
        return
    four_bit = getattr(unwrap(model), "is_loaded_in_4bit", False)
    for p in model.parameters():
        stand, base = origin.get(id(p), (None, None))
        if stand is p and (p.requires_grad or four_bit):
            p.data = base.detach().to(p.device, copy=True)
        elif p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def count_trainable(model: Any) -> int:
    """Parameters that train: elements of every tensor the optimiser updates, except where a
    method lets only some entries of a tensor change (Child-Tuning's gradient masks): those
    count the entries it lets through (``_common.count_entries_as``). Recorded as
    ``trained_params``."""
    counts = entry_counts(model)
    return sum(counts.get(id(p), p.numel()) for _, p in trainable_parameters(model))


def count_stored(model: Any) -> int:
    """Parameters a user stores after training, in 32-bit-parameter equivalents: what trains
    (``count_trainable``), except tensors a method stores differently
    (``_common.count_stored_as``): ProPETL's masks as bits (``ceil(entries / 32)``), prefix
    tuning's reparameterisation MLP as the prefix values it produces. The parameter
    objective of the search (``trainable_params``) is this count, for every method."""
    trained, stored = entry_counts(model), stored_counts(model)
    return sum(stored.get(id(p), trained.get(id(p), p.numel()))
               for _, p in trainable_parameters(model))


def count_total(model: Any) -> int:
    """Parameters of the model, shared tensors once; peft's frozen head copies excluded."""
    seen, total = set(), 0
    for name, param in model.named_parameters():
        if id(param) in seen or ".original_module." in name:
            continue
        seen.add(id(param))
        total += param.numel()
    return total
