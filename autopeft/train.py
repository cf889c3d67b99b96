"""The training loop: AdamW, linear warm-up and decay, dynamic padding. Read top to bottom.

Methods that need work around the optimiser step (AdaLoRA's rank re-allocation,
Child-Tuning's gradient masks) register step hooks on the model (``register_step_hook``);
the loop calls them, nothing else is hidden.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autopeft.contract import HOOKS_ATTR, learning_rates, trainable_parameters
from autopeft.settings import TrainSettings  # noqa: F401  (re-exported)
from autopeft.data import Encoded, collate, train_order
from autopeft.memory import PeakMemory

# A loss this many times its first value (after a few steps) has diverged: stop the trial
# now rather than after the whole budget.
EXPLODE_FACTOR, EXPLODE_AFTER = 50.0, 5


@dataclass
class TrainResult:
    score: float
    steps: int
    samples: int
    seconds: float
    peak_memory: int
    memory_method: str
    final_loss: float
    rung_scores: dict[int, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the final metric's components


class Diverged(RuntimeError):
    """The loss became NaN or infinite: the candidate cannot train at this learning rate."""


def optimizer_step(optimizer: torch.optim.Optimizer, hooks: Sequence[Any], step: int) -> None:
    """One optimiser step, with the methods' step hooks just before and after it."""
    for hook in hooks:
        getattr(hook, "before_optimizer_step", lambda s: None)(step)
    optimizer.step()
    for hook in hooks:
        getattr(hook, "after_optimizer_step", lambda s: None)(step)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _scored(model: Any, evaluate: Callable[[Any], dict[str, float]]) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        return evaluate(model)
    finally:
        model.train(was_training)


def _optimizer(model: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; tensors a method gives their own learning rate (``_common.set_lr``, e.g.
    ProPETL's mask scores) get a group of their own (the schedule scales every group)."""

    own = learning_rates(model)
    groups: dict[tuple[float, float], list] = {}
    for _, p in trainable_parameters(model):
        decay = weight_decay if p.ndim >= 2 else 0.0  # none on biases, norms, scaling vectors
        groups.setdefault((own.get(id(p), lr), decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": g_lr, "weight_decay": wd}
                              for (g_lr, wd), ps in groups.items()], lr=lr)


def total_steps(n_examples: int, settings: TrainSettings) -> int:
    """Optimiser steps of one trial."""
    micro = settings.epochs * math.ceil(n_examples / settings.batch_size)
    return max(1, math.ceil(micro / settings.grad_accum))


def _checkpointing(model: Any) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(inner).__name__} does not support gradient checkpointing")
    # Non-reentrant: works when the inputs do not require grad (frozen embeddings).
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def train(model: Any, train_enc: Encoded, evaluate: Callable[[Any], dict[str, float]], lr: float,
          seed: int, settings: TrainSettings, pad_id: int,
          on_step: Callable[[int, int, float], None] | None = None,
          eval_at: Sequence[int] = (),
          on_eval: Callable[[int, float], None] | None = None,
          schedule_steps: int | None = None, stop_at: int | None = None,
          evaluate_rung: Callable[[Any], dict[str, float]] | None = None) -> TrainResult:
    """Train ``model`` and score it with ``evaluate(model)``.

    The learning-rate schedule (warm-up, linear decay) is planned for ``schedule_steps``
    (default: ``settings.epochs`` over the data); training stops after ``stop_at`` steps
    (default: the schedule's end), so a short run is the exact start of a longer one.
    ``on_step(step, total, loss)`` reports progress; at each step in ``eval_at`` before the
    end the model is scored with ``evaluate_rung`` (default ``evaluate``: e.g. a validation
    subset) and ``on_eval(step, score)`` called (it may raise to stop the trial early); the
    end is scored with ``evaluate``.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    device = resolve_device(settings.device)
    model.to(device)
    if settings.gradient_checkpointing:
        _checkpointing(model)
    model.train()
    optimizer = _optimizer(model, lr, settings.weight_decay)
    n_steps = schedule_steps or total_steps(len(train_enc), settings)
    end = min(n_steps, stop_at or n_steps)
    warmup = int(settings.warmup_ratio * n_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup
        else max(0.0, (n_steps - s) / max(1, n_steps - warmup)))
    memory = PeakMemory(model, optimizer, device)
    hooks = getattr(model, HOOKS_ATTR, [])
    def look_ahead() -> Any:
        """One epoch of batches for a method that looks at the data before training; each
        batch is reported as step 0, so a budget or an interrupt can stop it too."""
        for b in train_order(train_enc, settings.batch_size, seed):
            if on_step:
                on_step(0, end, float("nan"))
            yield to_device(collate(train_enc, b, pad_id), device)

    for hook in hooks:
        if hasattr(hook, "before_training"):
            batches = look_ahead()
            with autocast(device, settings.precision):
                hook.before_training(model, batches)
    params = [p for _, p in trainable_parameters(model)]
    rung_scores: dict[int, float] = {}
    metrics: dict[str, float] = {}
    step, samples, loss_value, epoch = 0, 0, float("nan"), 0
    micro, first_loss = 0, None
    while step < end:
        batches = train_order(train_enc, settings.batch_size, seed + epoch)
        if not batches:  # else this loop would spin for ever
            raise ValueError(f"the training data yields no batches ({len(train_enc)} examples, "
                             f"batch size {settings.batch_size})")
        for batch in batches:
            inputs = to_device(collate(train_enc, batch, pad_id), device)
            with memory.step(), autocast(device, settings.precision):
                loss = model(**inputs).loss
            (loss / settings.grad_accum).backward()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise Diverged(f"loss became {loss_value} at step {step + 1}")
            first_loss = loss_value if first_loss is None else first_loss
            if step >= EXPLODE_AFTER and loss_value > EXPLODE_FACTOR * max(first_loss, 1.0):
                raise Diverged(f"loss exploded to {loss_value:.3g} at step {step + 1} "
                               f"(it started at {first_loss:.3g})")
            samples += len(batch)
            micro += 1
            if micro % settings.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer_step(optimizer, hooks, step)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if on_step:
                on_step(step, end, loss_value)
            if step in eval_at or step == end:
                metrics = _scored(model, evaluate if step == end else evaluate_rung or evaluate)
                rung_scores[step] = metrics["score"]
                if on_eval and step in eval_at:
                    on_eval(step, rung_scores[step])
            if step >= end:
                break
        epoch += 1
    return TrainResult(score=metrics["score"], steps=step, samples=samples,
                       seconds=time.perf_counter() - start, peak_memory=memory.bytes(),
                       memory_method=memory.method, final_loss=loss_value,
                       rung_scores=rung_scores, metrics=metrics)
