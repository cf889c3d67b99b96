"""The training loop: AdamW, linear warm-up and decay (``warmup_then_decay``), dynamic
padding, gradient accumulation as an explicit inner loop over the micro-batch stream. Read
``train`` top to bottom.

Methods that need work around the optimiser step (AdaLoRA's rank re-allocation,
Child-Tuning's gradient masks) register step hooks on the model (``register_step_hook``);
the loop calls them, nothing else is hidden. The search's rungs are not the loop's business:
``runner.Bench.run`` scores them from the ``after_step`` callback.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autopeft.checkpoint import (Checkpoint, continuable, copied, hook_states, model_tensors,
                                 rng_state)
from autopeft.contract import HOOKS_ATTR, learning_rates, trainable_parameters
from autopeft.settings import TrainSettings  # noqa: F401  (re-exported)
from autopeft.data import Encoded, collate, train_order
from autopeft.devices import bf16_native, claim_share
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
    peak_memory: int  # training only: the memory objective (``memory.PeakMemory``)
    memory_method: str
    final_loss: float
    metrics: dict[str, float] = field(default_factory=dict)  # the final metric's components
    resumed_from: int = 0  # steps a checkpoint had done: this run trained steps - resumed_from
    scoring_peak_memory: int | None = None  # scoring's own peak (CUDA; None on CPU)
    scoring_seconds: float = 0.0  # of ``seconds``, scoring (rungs and the end): see Bench.run
    build_peak_memory: int | None = None  # building the model (CUDA): in ``peak_memory`` too
    # Of ``seconds``, before the first step: the schedule's longest batch (memory), the
    # methods' look at the data, a checkpoint restored. A run continued from a checkpoint
    # pays little of it, so a continuation is predicted without it (``plan.continuation_seconds``).
    setup_seconds: float = 0.0


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


def uses_bf16(device: torch.device, precision: str) -> bool:
    """``bf16``, or ``auto`` on a training device with native bf16 (``devices.bf16_native``:
    compute capability 8.0+, never emulated bf16, asked of ``device`` itself)."""
    return precision == "bf16" or (precision == "auto" and bf16_native(device))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_base(settings: TrainSettings) -> bool:
    """Whether a candidate's frozen weights train in bf16 (``frozen_in_bf16``): bf16 on CUDA."""
    device = resolve_device(settings.device)
    return device.type == "cuda" and uses_bf16(device, settings.precision)


def maybe_bf16_base(settings: TrainSettings) -> bool:
    """``bf16_base`` without asking the GPU (which would create a CUDA context in the search
    process): bf16 or auto on CUDA. For memory predictions, which stay lower bounds."""
    return resolve_device(settings.device).type == "cuda" and settings.precision in ("bf16", "auto")


def set_tf32(device: torch.device, precision: str) -> None:
    """TF32 matmuls (fp32 storage, 10-bit mantissa products, Ampere+) with ``--precision
    tf32`` on CUDA; ``fp32`` is exact fp32. A process-wide switch, set by every trial."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def frozen_in_bf16(model: Any) -> int:
    """Store the frozen floating-point weights in bf16 (bf16 training): autocast would cast
    each on every forward and keep the bf16 copies for backward. Whatever trains stays fp32
    (LoRA, BitFit's biases, the head, all of full fine-tuning), so does a 4-bit model (peft
    keeps its norms in fp32 on purpose). LayerNorm runs in fp32 under autocast either way.
    Returns the number of tensors cast."""
    if getattr(getattr(model, "get_base_model", lambda: model)(), "is_loaded_in_4bit", False):
        return 0
    cast = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
            cast += 1
    return cast


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Asynchronous only from pinned memory (from pageable memory ``non_blocking`` copies
    synchronously anyway, through a staging buffer)."""
    return {k: v.to(device, non_blocking=device.type == "cuda" and v.is_pinned())
            for k, v in batch.items()}


class OnDevice:
    """``(rows, batch on device)`` for each micro-batch of ``stream``. On CUDA the next batch
    is collated and pinned in a background thread while this one trains, then copied
    asynchronously; on CPU in order, in this thread (results as ever). ``position`` is the
    stream's position after the batches handed out so far (one drawn ahead is not counted),
    so a checkpoint continues exactly where training stood."""

    def __init__(self, device: torch.device, stream: Iterator[list[int]],
                 make: Callable[[list[int]], dict[str, torch.Tensor]]) -> None:
        self.device, self.stream, self.make = device, stream, make
        self.position = getattr(stream, "position", None)
        self._batches = self._run()

    def __iter__(self) -> OnDevice:
        return self

    def __next__(self) -> tuple[list[int], dict[str, torch.Tensor]]:
        return next(self._batches)

    def close(self) -> None:
        """Stop drawing ahead: waits for the batch being prepared, so no collate thread
        outlives the training that asked for it."""
        self._batches.close()

    def __enter__(self) -> OnDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        if self.device.type != "cuda":
            for rows in self.stream:
                self.position = getattr(self.stream, "position", None)
                yield rows, to_device(self.make(rows), self.device)
            return

        def load(rows: list[int]) -> dict[str, torch.Tensor]:
            return {k: v.pin_memory() for k, v in self.make(rows).items()}

        def submit(pool: ThreadPoolExecutor) -> tuple[list[int], Any, Any] | None:
            rows = next(self.stream, None)
            if rows is None:
                return None
            return rows, getattr(self.stream, "position", None), pool.submit(load, rows)

        with ThreadPoolExecutor(1, thread_name_prefix="autopeft-collate") as pool:
            ahead = submit(pool)
            while ahead is not None:
                rows, position, future = ahead
                batch = future.result()
                ahead = submit(pool)  # the next one is prepared while this one trains
                self.position = position
                yield rows, to_device(batch, self.device)


def batches_on(device: torch.device, stream: Iterator[list[int]],
               make: Callable[[list[int]], dict[str, torch.Tensor]]) -> OnDevice:
    """The micro-batch stream on ``device`` (``OnDevice``)."""
    return OnDevice(device, stream, make)


def scored(model: Any, evaluate: Callable[[Any], dict[str, float]]) -> dict[str, float]:
    """``evaluate(model)`` in eval mode (no dropout), the model's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        return evaluate(model)
    finally:
        model.train(was_training)


def longest_rows(train_enc: Encoded, batch_size: int) -> np.ndarray:
    """The ``batch_size`` longest rows: a batch of the shape of the schedule's longest (the
    batches are padded to their longest row, and every epoch holds the longest row)."""
    lengths = train_enc.lengths()
    return np.argsort(-lengths, kind="stable")[:batch_size]


def longest_batch(model: Any, train_enc: Encoded, settings: TrainSettings, pad_id: int,
                  memory: PeakMemory, device: torch.device) -> None:
    """One forward and backward on ``longest_rows``, measured (``PeakMemory.longest``) and
    then undone: gradients cleared, no optimiser step, every random generator restored
    (dropout draws nothing from the run's streams), so the run trains exactly as without it."""
    if not len(train_enc):
        return
    inputs = to_device(collate(train_enc, longest_rows(train_enc, settings.batch_size), pad_id),
                       device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        with memory.longest():
            with autocast(device, settings.precision):
                loss = model(**inputs).loss
            loss.backward()
    model.zero_grad(set_to_none=True)


def _optimizer(model: Any, lr: float, weight_decay: float,
               fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; tensors a method gives their own learning rate (``_common.set_lr``, e.g.
    ProPETL's mask scores) get a group of their own (the schedule scales every group).
    ``fused``: one CUDA kernel for the whole step (trainable tensors on CUDA, fp32)."""

    own = learning_rates(model)
    groups: dict[tuple[float, float], list] = {}
    for _, p in trainable_parameters(model):
        decay = weight_decay if p.ndim >= 2 else 0.0  # none on biases, norms, scaling vectors
        groups.setdefault((own.get(id(p), lr), decay), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": g_lr, "weight_decay": wd}
                              for (g_lr, wd), ps in groups.items()], lr=lr,
                             **({"fused": True} if fused else {}))


def total_steps(n_examples: int, settings: TrainSettings) -> int:
    """Optimiser steps of one trial."""
    micro = settings.epochs * math.ceil(n_examples / settings.batch_size)
    return max(1, math.ceil(micro / settings.grad_accum))


def warmup_then_decay(step: int, warmup: int, total: int) -> float:
    """The learning rate's factor at ``step`` (0-based): linear warm-up over ``warmup``
    steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


class MicroBatches:
    """Rows of one micro-batch after another, epoch after epoch (epoch ``e`` in the order
    seeded ``seed + e``): an optimiser step's micro-batches may span two epochs.
    ``position`` is (epoch, index) of the next micro-batch: a stream started there
    (``start``) draws exactly what this one draws next (a continued run, ``checkpoint``)."""

    def __init__(self, train_enc: Encoded, batch_size: int, seed: int,
                 start: tuple[int, int] = (0, 0)) -> None:
        self.train_enc, self.batch_size, self.seed = train_enc, batch_size, seed
        self.epoch, self.index = start
        self._batches: list | None = None

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.index

    def __iter__(self) -> MicroBatches:
        return self

    def __next__(self) -> list[int]:
        while self._batches is None or self.index >= len(self._batches):
            if self._batches is not None:
                self.epoch, self.index = self.epoch + 1, 0
            self._batches = train_order(self.train_enc, self.batch_size, self.seed + self.epoch)
            if not self._batches:  # else the loop would wait for ever
                raise ValueError(f"the training data yields no batches ({len(self.train_enc)} "
                                 f"examples, batch size {self.batch_size})")
        batch = self._batches[self.index]
        self.index += 1
        return batch


def micro_batches(train_enc: Encoded, batch_size: int, seed: int,
                  start: tuple[int, int] = (0, 0)) -> MicroBatches:
    """The micro-batch stream (``MicroBatches``), from ``start`` = (epoch, index)."""
    return MicroBatches(train_enc, batch_size, seed, start)


def _checkpointing(model: Any) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(inner).__name__} does not support gradient checkpointing")
    # Non-reentrant: works when the inputs do not require grad (frozen embeddings).
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def reports_late(device: torch.device) -> bool:
    """Whether a step's losses are read one step late (``train``): on CUDA, where reading
    them at once would make the host wait for the GPU at every step."""
    return device.type == "cuda"


class _HostLosses:
    """A step's losses copied to pinned host memory without waiting (CUDA), read later."""

    def __init__(self, losses: torch.Tensor) -> None:
        if losses.is_cuda:
            self.host = torch.empty(losses.shape, dtype=losses.dtype, pin_memory=True)
            self.host.copy_(losses, non_blocking=True)
            self.event: Any = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = losses, None

    def values(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()  # only this step's work: the next is already queued
        return self.host.tolist()


def train(model: Any, train_enc: Encoded, evaluate: Callable[[Any], dict[str, float]], lr: float,
          seed: int, settings: TrainSettings, pad_id: int,
          on_step: Callable[[int, int, float], None] | None = None,
          schedule_steps: int | None = None, stop_at: int | None = None,
          after_step: Callable[[int, Any], None] | None = None,
          resume: Checkpoint | None = None, save_at: Collection[int] = (),
          save: Callable[[Checkpoint], None] | None = None,
          build_bytes: int = 0, after_step_at: Collection[int] | None = None) -> TrainResult:
    """Train ``model``, then score it with ``evaluate(model)``.

    The learning-rate schedule (``warmup_then_decay``) is planned for ``schedule_steps``
    (default: ``settings.epochs`` over the data); training stops after ``stop_at`` steps
    (default: the schedule's end), so a short run is the exact start of a longer one.
    ``on_step(step, total, loss)`` reports progress after each optimiser step (step 0: a
    method's look at the data before training); ``after_step(step, model)`` runs after each
    step but the last, e.g. to score the model part-way (``scored``); either may raise to
    stop training.

    ``resume``: go on from this checkpoint (``checkpoint.Checkpoint``) of the same run
    instead of step 0; ``save(checkpoint)`` is called after each step in ``save_at`` (after
    its callbacks passed, or when ``after_step`` raised an exception whose
    ``keep_checkpoint`` is true: a run paused at a rung). ``after_step_at``: the steps ``after_step`` is for (None: every
    step). On CUDA (``reports_late``) a step's losses travel to the host while the next step
    computes, and ``on_step`` and the divergence checks for it run then, one step late: no
    host sync per step; a step ``after_step`` or ``save`` is for, and the last, report at
    once. ``build_bytes``: what building the model took at its peak
    (``memory.build_peak``): the peak is the larger of it and training's. A run whose step
    hooks cannot give their state
    (``checkpoint.continuable``) trains from step 0 and saves nothing: ``resumed_from`` says
    where a run really started.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    device = resolve_device(settings.device)
    claim_share(device)  # a worker sharing its GPU: capped at its share of the memory
    set_tf32(device, settings.precision)
    model.to(device)
    if bf16_base(settings):
        frozen_in_bf16(model)
    if settings.gradient_checkpointing:
        _checkpointing(model)
    model.train()
    optimizer = _optimizer(model, lr, settings.weight_decay, fused=device.type == "cuda")
    n_steps = schedule_steps or total_steps(len(train_enc), settings)
    end = min(n_steps, stop_at or n_steps)
    warmup = int(settings.warmup_ratio * n_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_then_decay(s, warmup, n_steps))
    memory = PeakMemory(model, optimizer, device)
    hooks = getattr(model, HOOKS_ATTR, [])

    def look_ahead() -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of batches for a method that looks at the data before training; each
        batch is reported as step 0, so a budget or an interrupt can stop it too."""
        for b in train_order(train_enc, settings.batch_size, seed):
            if on_step:
                on_step(0, end, float("nan"))
            yield to_device(collate(train_enc, b, pad_id), device)

    if not continuable(hooks):
        resume, save = None, None
    for hook in hooks if resume is None else ():  # a continued run gets their state back
        if hasattr(hook, "before_training"):
            with autocast(device, settings.precision):
                hook.before_training(model, look_ahead())
    start_step, position, samples, loss_value, first_loss = 0, (0, 0), 0, float("nan"), None
    if resume is not None:  # everything the first steps changed, the random generators last
        if resume.schedule_steps != n_steps or resume.step > end:
            raise ValueError(f"a checkpoint at step {resume.step} of a {resume.schedule_steps}-"
                             f"step schedule cannot continue to step {end} of {n_steps}")
        resume.restore(model, optimizer, scheduler, hooks)
        start_step, position, samples = resume.step, resume.position, resume.samples
        loss_value, first_loss = resume.loss, resume.first_loss
    peak_before = resume.peak_memory if resume else 0  # the steps this run did not take
    if resume is None:  # the peak of the whole schedule, however long this run is
        longest_batch(model, train_enc, settings, pad_id, memory, device)
    params = [p for _, p in trainable_parameters(model)]
    lag = reports_late(device)
    pending: tuple[int, _HostLosses] | None = None  # a step whose losses are on their way
    setup = time.perf_counter() - start

    def report(step: int, values: list[float]) -> None:
        """The divergence checks and ``on_step`` for ``step``, from its micro-batch losses."""
        nonlocal loss_value, first_loss
        for loss_value in values:
            if not math.isfinite(loss_value):
                raise Diverged(f"loss became {loss_value} at step {step}")
            first_loss = loss_value if first_loss is None else first_loss
            if step > EXPLODE_AFTER and loss_value > EXPLODE_FACTOR * max(first_loss, 1.0):
                raise Diverged(f"loss exploded to {loss_value:.3g} at step {step} "
                               f"(it started at {first_loss:.3g})")
        if on_step:
            on_step(step, end, loss_value)

    with batches_on(device, micro_batches(train_enc, settings.batch_size, seed, position),
                    lambda rows: collate(train_enc, rows, pad_id)) as stream:
        for step in range(start_step + 1, end + 1):
            losses = []
            for _ in range(settings.grad_accum):  # gradients add up over the micro-batches
                batch, inputs = next(stream)
                with memory.step(), autocast(device, settings.precision):
                    loss = model(**inputs).loss
                (loss / settings.grad_accum).backward()
                losses.append(loss.detach())
                samples += len(batch)
            if pending is not None:  # the last step's losses, read while this one computes
                report(pending[0], pending[1].values())
                pending = None
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer_step(optimizer, hooks, step - 1)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            rung = after_step is not None and step < end and (
                after_step_at is None or step in after_step_at)
            saving = save is not None and step in save_at
            if lag and step < end and not rung and not saving:
                pending = (step, _HostLosses(torch.stack(losses)))  # no host sync now
                continue
            report(step, torch.stack(losses).tolist())  # a host sync: the step must be done

            def checkpoint() -> Checkpoint:
                return Checkpoint(step, n_steps, stream.position, samples, loss_value, first_loss,
                                  max(memory.bytes(), peak_before),
                                  model_tensors(model), copied(optimizer.state_dict()),
                                  copied(scheduler.state_dict()), rng_state(), hook_states(hooks))

            if rung:
                try:
                    with memory.scoring():  # a rung's scoring is not training memory
                        after_step(step, model)
                except BaseException as stop:  # a run paused here (``keep_checkpoint``) goes on later
                    if saving and getattr(stop, "keep_checkpoint", False):
                        save(checkpoint())
                    raise
            if saving:
                save(checkpoint())
    with memory.scoring():
        metrics = scored(model, evaluate)
    return TrainResult(score=metrics["score"], steps=end, samples=samples,
                       seconds=time.perf_counter() - start,
                       peak_memory=max(memory.bytes(), peak_before, build_bytes),
                       memory_method=memory.method, final_loss=loss_value, metrics=metrics,
                       resumed_from=start_step, scoring_peak_memory=memory.scoring_bytes(),
                       build_peak_memory=build_bytes or None, setup_seconds=round(setup, 3))
