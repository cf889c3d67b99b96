"""Child-Tuning (Xu et al., 2021): update only a "child network" of the pretrained weights by
masking their gradients before each optimiser step (a step hook's ``before_optimizer_step``,
after backward and clipping). Every parameter inside the chosen ``layers`` (weights, biases,
norms; not the embeddings, as in the paper's code) is handed to the optimiser.

* ``F`` (task-free): a fresh Bernoulli(``reserve_p``) mask each step, kept gradients scaled
  by ``1 / reserve_p``.
* ``D`` (task-driven): the entries with the largest Fisher information are kept for the
  whole run. The paper estimates the Fisher on the training data before training; ``apply``
  has no data, so we estimate it from the squared (clipped) gradients of the first
  ``fisher_steps`` steps of training itself, during which the layer weights get no update
  (the task head trains), then fix the mask. We keep the top ``reserve_p`` share *of each
  tensor* rather than one global threshold: a global one starves tensors whose gradients are
  small in scale (e.g. BERT's key biases, whose gradient is ~0), which then never change.

What the trainable-parameter objective reports: only the entries a mask lets through can
receive gradient, so each masked tensor counts ``max(1, round(reserve_p * numel))`` entries:
exactly the entries of D's fixed mask, the expected entries of a step for F (over a run, F
touches every entry). As in the paper's ChildTuningAdamW, the optimiser itself is not
changed: Adam's momentum carries earlier F updates into entries masked out of this step, and
decoupled weight decay shrinks every entry a little.

Step hooks are called with 0-based step numbers; the masks are not saved (they only shape
training), the trained weights are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.arch import resolve_layers
from autopeft.errors import UserError
from autopeft.methods._common import count_entries_as, one_of, placement, positive_int, unwrap
from autopeft.methods.registry import Method


@dataclass
class Spec:
    mode: str = "F"  # F: random mask each step; D: Fisher-selected fixed mask
    reserve_p: float = 0.3  # share of gradient entries kept (the paper tries 0.1 to 0.3)
    layers: Any = "all"
    fisher_steps: int | None = None  # D: steps to estimate the Fisher (None: 10% of training)

    def __post_init__(self) -> None:
        one_of("mode", self.mode, ("D", "F"), "child_tuning")
        if not (isinstance(self.reserve_p, (int, float)) and 0 < self.reserve_p <= 1):
            raise UserError(f"child_tuning: reserve_p must be in (0, 1], got {self.reserve_p!r}")
        if self.fisher_steps is not None:
            positive_int("fisher_steps", self.fisher_steps, "child_tuning")
        placement("child_tuning", self.layers)


def kept(numel: int, reserve_p: float) -> int:
    """Entries of a tensor of ``numel`` entries that a mask lets through."""
    return max(1, round(reserve_p * numel))


class _GradientMask:
    """Step hook holding the masked tensors; masks gradients in place before the update."""

    def __init__(self, params: list[Any], spec: Spec, fisher_steps: int) -> None:
        self.params, self.spec, self.fisher_steps = params, spec, fisher_steps
        self.fisher: list[Any] | None = None  # D: running sum of squared gradients
        self.masks: list[Any] | None = None  # D: the fixed masks, once selected

    def before_optimizer_step(self, step: int) -> None:
        if self.spec.mode == "F":
            self._random_masks()
        elif step < self.fisher_steps:
            self._accumulate_fisher()
            if step == self.fisher_steps - 1:
                self._select()
        else:
            if self.masks is None:  # a run shorter than fisher_steps: select from what we have
                self._select()
            for p, mask in zip(self.params, self.masks):
                if p.grad is not None:
                    p.grad.mul_(mask)

    def _random_masks(self) -> None:
        import torch

        p_keep = self.spec.reserve_p
        for p in self.params:
            if p.grad is not None:
                keep = torch.rand_like(p.grad) < p_keep
                p.grad.mul_(keep).div_(p_keep)

    def _accumulate_fisher(self) -> None:
        import torch

        if self.fisher is None:
            self.fisher = [torch.zeros_like(p) for p in self.params]
        for p, f in zip(self.params, self.fisher):
            if p.grad is not None:
                f.add_(p.grad.detach() ** 2)
                p.grad.zero_()  # estimation only: the layer weights do not move yet

    def _select(self) -> None:
        import torch

        fisher = self.fisher or [torch.zeros_like(p) for p in self.params]
        self.masks = []
        for f in fisher:
            flat = f.flatten()
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[torch.topk(flat, kept(flat.numel(), self.spec.reserve_p)).indices] = True
            self.masks.append(mask.view_as(f))
        self.fisher = None


def apply(model: Any, spec: Spec, ctx: Any) -> Any:
    from autopeft.train import register_step_hook

    keep = set(resolve_layers(spec.layers, ctx.num_layers))
    params = []
    for name, param in unwrap(model).named_parameters():
        where = ctx.arch.layer_of(name.rsplit(".", 1)[0])
        # Frozen base weights only: another method's adapter in the same layer keeps training
        # unmasked.
        if (where is not None and where[0] in keep and not param.requires_grad
                and param.is_floating_point()):  # not QLoRA's 4-bit weights
            params.append(param)
    if not params:
        raise UserError(f"child_tuning: no frozen weights in layers {spec.layers!r}")
    steps = spec.fisher_steps or max(1, round(0.1 * (ctx.total_steps or 10)))
    if spec.mode == "D" and ctx.total_steps is not None and steps >= ctx.total_steps:
        raise UserError(f"child_tuning: fisher_steps ({steps}) leaves none of the "
                        f"{ctx.total_steps} training steps to train; lower it")
    for param in params:
        param.requires_grad_(True)
        count_entries_as(model, param, kept(param.numel(), spec.reserve_p))
    register_step_hook(model, _GradientMask(params, spec, steps))
    return model


METHOD = Method(name="child_tuning", category="partial", spec=Spec, apply=apply,
                summary="Child-Tuning: update a masked child network (D: Fisher, F: random)")
