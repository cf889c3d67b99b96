"""Child-Tuning (Xu et al., 2021): update only a "child network" of the pretrained weights by
masking their gradients before each optimiser step (a step hook's ``before_optimizer_step``,
after backward and clipping), as the reference's ``ChildTuningAdamW`` does inside its step.

* ``F`` (task-free): a fresh Bernoulli(``reserve_p``) mask each step, kept gradients scaled
  by ``1 / reserve_p``.
* ``D`` (task-driven), as the reference (alibaba/AliceMind ``ChildTuning``,
  ``calculate_fisher``): before training, one pass over the training data (``train`` calls
  the hook's ``before_training``; no optimiser step, the backbone loses no training step)
  sums each masked tensor's squared gradient, each gradient clipped to norm 1 on its own
  (the reference clips per tensor at ``max_grad_norm``, 1.0). One global threshold over all
  masked tensors keeps the top ``reserve_p`` of entries (``rule: global``), so tensors end
  up with very different densities. ``rule: per_tensor`` keeps the top share of each tensor
  instead (an earlier autopeft rule; a global threshold can leave a tensor with almost no
  entry). We pick exactly ``round(reserve_p * N)`` entries by rank where the reference's
  ``>= percentile`` keeps every tie (with many zero-Fisher entries, all of them).

What the layers' masks cover: every parameter inside the chosen ``layers`` (weights, biases,
norms). Outside the layers (embeddings, pooler, final norms; not the task head, which always
trains), ``embeddings`` chooses: ``reference`` (the default) hands them to the optimiser as
the reference does, unmasked under D (they are not in its Fisher, which takes names with
"layer") and Bernoulli-masked under F (its F masks every parameter); ``masked`` puts them
under the same mask rule as the layers (D: inside the global Fisher threshold); ``frozen``
leaves them out.

Where we differ from ``ChildTuningAdamW``: its decoupled weight decay shrinks every entry,
so under D the "masked" entries still move. Here D's masked-out entries are put back after
each optimiser step, so exactly the child network changes. F keeps the reference's
behaviour (Adam's momentum carries earlier updates into entries masked out of this step).

What the trainable-parameter objective reports: a masked tensor counts the entries its
mask lets through: D's fixed mask (before the Fisher pass, the same total spread over the
tensors by size; after it, the true per-tensor counts), F's expected entries per step
``max(1, round(reserve_p * numel))`` (over a run F touches every entry). Unmasked tensors
count whole. The masks are not exported (they only shape training); the trained weights are.
A run's checkpoint keeps D's masks (``state_dict``), so a continued run needs no second
Fisher pass.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autopeft.arch import resolve_layers
from autopeft.errors import UserError
from autopeft.methods._common import (count_entries_as, layers_field, one_of, placement,
                                      positive_int, unwrap)
from autopeft.methods.registry import Method

FISHER_CLIP = 1.0  # the reference clips each tensor's gradient at max_grad_norm (1.0)


@dataclass
class Spec:
    mode: str = field(default="F", metadata={
        "help": "F: a fresh random gradient mask each step | D: a fixed Fisher-selected mask"})
    reserve_p: float = field(default=0.3, metadata={
        "help": "share of gradient entries kept, (0, 1] (the paper tries 0.1 to 0.3)"})
    layers: Any = layers_field("layers whose weights train under the mask")
    embeddings: str = field(default="reference", metadata={
        "help": "embeddings, pooler, final norms: reference (train, as the reference code) | "
                "masked | frozen"})
    rule: str = field(default="global", metadata={
        "help": "D: global (one Fisher threshold over all tensors) | per_tensor (top share of "
                "each)"})
    fisher_batches: int | None = field(default=None, metadata={
        "help": "D: training batches in the Fisher pass (None: all of them, one epoch)"})

    def __post_init__(self) -> None:
        one_of("mode", self.mode, ("D", "F"), "child_tuning")
        if not (isinstance(self.reserve_p, (int, float)) and 0 < self.reserve_p <= 1):
            raise UserError(f"child_tuning: reserve_p must be in (0, 1], got {self.reserve_p!r}")
        one_of("embeddings", self.embeddings, ("reference", "masked", "frozen"), "child_tuning")
        one_of("rule", self.rule, ("global", "per_tensor"), "child_tuning")
        if self.fisher_batches is not None:
            positive_int("fisher_batches", self.fisher_batches, "child_tuning")
        placement("child_tuning", self.layers)


def kept(numel: int, reserve_p: float) -> int:
    """Entries of a tensor of ``numel`` entries that a mask lets through."""
    return max(1, round(reserve_p * numel))


def spread(sizes: list[int], reserve_p: float) -> list[int]:
    """``kept(sum(sizes))`` entries apportioned to tensors by size (cumulative rounding):
    the global rule's count before the Fisher pass says where they fall."""
    total, counts, cum, done = sum(sizes), [], 0, 0
    for size in sizes:
        cum += size
        upto = kept(total, reserve_p) if cum == total else round(reserve_p * cum)
        counts.append(upto - done)
        done = upto
    return counts


class _GradientMask:
    """Step hook holding the masked tensors: D's Fisher pass before training, the gradient
    masks before each optimiser step, D's masked-out entries restored after it."""

    def __init__(self, params: list[Any], spec: Spec) -> None:
        self.params, self.spec = params, spec
        self.masks: list[Any] | None = None  # D: the fixed masks, once selected
        self._frozen: list[Any] = []  # D: values of the masked-out entries (never change)

    def before_training(self, model: Any, batches: Iterable[dict[str, Any]]) -> None:
        """D: the Fisher information over the training data, then the fixed masks."""
        if self.spec.mode != "D":
            return
        import torch

        fisher = [torch.zeros_like(p) for p in self.params]
        n = 0
        for inputs in batches:
            if self.spec.fisher_batches is not None and n >= self.spec.fisher_batches:
                break
            model.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            for p, f in zip(self.params, fisher):
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, FISHER_CLIP)
                    f.add_(p.grad.detach() ** 2)
            n += 1
        model.zero_grad(set_to_none=True)
        self.select(model, [f / max(1, n) for f in fisher])

    def select(self, model: Any, fisher: list[Any]) -> None:
        """Fix D's masks from per-entry Fisher scores; recount the entries that train."""
        import torch

        p_keep = self.spec.reserve_p
        if self.spec.rule == "global":
            flat = torch.cat([f.flatten() for f in fisher])
            chosen = torch.zeros_like(flat, dtype=torch.bool)
            chosen[torch.topk(flat, kept(flat.numel(), p_keep), sorted=False).indices] = True
            parts = chosen.split([f.numel() for f in fisher])
            self.masks = [m.view_as(f) for m, f in zip(parts, fisher)]
        else:
            self.masks = []
            for f in fisher:
                mask = torch.zeros(f.numel(), dtype=torch.bool, device=f.device)
                mask[torch.topk(f.flatten(), kept(f.numel(), p_keep), sorted=False).indices] = True
                self.masks.append(mask.view_as(f))
        self._frozen = [p.detach()[~m].clone() for p, m in zip(self.params, self.masks)]
        for p, mask in zip(self.params, self.masks):
            count_entries_as(model, p, int(mask.sum()))  # the later count wins

    def before_optimizer_step(self, step: int) -> None:
        if self.spec.mode == "F":
            self._random_masks()
            return
        if self.masks is None:
            raise RuntimeError("child_tuning D: no Fisher pass before the first step; train "
                               "with autopeft.train.train (it calls before_training)")
        for p, mask in zip(self.params, self.masks):
            if p.grad is not None:
                p.grad.mul_(mask)

    def after_optimizer_step(self, step: int) -> None:
        """D: undo what weight decay did to the masked-out entries (they get no gradient)."""
        if self.spec.mode != "D":
            return
        import torch

        with torch.no_grad():
            for p, mask, values in zip(self.params, self.masks or (), self._frozen):
                p.masked_scatter_(~mask, values)

    def state_dict(self) -> dict[str, Any]:
        """D's fixed masks (F's masks are drawn from torch's generator, which a checkpoint
        restores): what a continued run needs instead of a second Fisher pass."""
        return {"masks": list(self.masks)} if self.masks is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "masks" not in state:
            return
        self.masks = [m.to(p.device) for m, p in zip(state["masks"], self.params)]
        # the masked-out entries hold their pretrained values (restored after every step)
        self._frozen = [p.detach()[~m].clone() for p, m in zip(self.params, self.masks)]

    def _random_masks(self) -> None:
        import torch

        p_keep = self.spec.reserve_p
        for p in self.params:
            if p.grad is not None:
                keep = torch.rand_like(p.grad) < p_keep
                p.grad.mul_(keep).div_(p_keep)


def _split(model: Any, spec: Spec, ctx: Any) -> tuple[list[Any], list[Any]]:
    """(tensors under the mask, tensors trained whole): frozen floating-point base weights
    (another method's adapter keeps training unmasked; QLoRA's 4-bit weights stay)."""
    inner = unwrap(model)
    layers = set(resolve_layers(spec.layers, ctx.num_layers))
    heads = tuple(ctx.arch.head_names(inner))
    masked, whole, seen = [], [], set()
    for name, param in inner.named_parameters():
        if param.requires_grad or not param.is_floating_point() or id(param) in seen:
            continue
        seen.add(id(param))
        if ".original_module." in name or any(name.startswith(h + ".") for h in heads):
            continue  # the task head trains whole (build), peft's frozen copy stays
        where = ctx.arch.layer_of(name.rsplit(".", 1)[0])
        if where is not None:
            if where[0] in layers:
                masked.append(param)
        elif spec.embeddings == "masked" or (spec.embeddings == "reference" and spec.mode == "F"):
            masked.append(param)
        elif spec.embeddings == "reference":
            whole.append(param)
    return masked, whole


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.contract import register_step_hook

    masked, whole = _split(model, spec, ctx)
    if not masked:
        raise UserError(f"child_tuning: no frozen weights in layers {spec.layers!r}")
    for param in masked + whole:
        param.requires_grad_(True)
    sizes = [p.numel() for p in masked]
    counts = (spread(sizes, spec.reserve_p) if spec.mode == "D" and spec.rule == "global"
              else [kept(n, spec.reserve_p) for n in sizes])
    for param, entries in zip(masked, counts):
        count_entries_as(model, param, entries)
    register_step_hook(model, _GradientMask(masked, spec))
    return model


METHOD = Method(name="child_tuning", category="partial", spec=Spec, apply=apply,
                summary="Child-Tuning: update a masked child network (D: Fisher, F: random)")
