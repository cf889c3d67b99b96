"""Measure what training and scoring cost on this machine, before the plan is made.

The plan is only as good as this number: a probe that measured 0.365 s/step while the trials
then ran at 0.18 s/step made a plan for half the candidates that ran. So the probe is
measured as the trials run:

* **where they run**: through the search's trainer, i.e. inside the trial process with
  ``--isolation process`` (``IsolatedBench.run``), with that process's threads;
* **warm**: a first short run starts that process, builds a candidate and takes
  ``WARMUP_STEPS`` steps (allocator, kernels, the data's first batches), untimed; the
  timed run then builds a fresh candidate (its start-up is measured) and is timed from
  step ``WARMUP_STEPS`` on;
* **on the same batches**: ``Bench.run`` with the trials' settings (batch size, padding,
  length grouping, the candidate's seed), so the batches are the trials' batches;
* **for the whole epoch, robustly**: training batches are length-grouped, so one holds short
  phrases and the next long sentences, and a step's time follows its padded tokens. The
  median step of 20 under-predicts the mean (MiniLM/SST-2 at batch 8: median 0.052 s, mean
  0.062 s); the mean of 20 is noisy (0.078 s). So a line, time = a + b x tokens, is fitted
  to the timed steps (Theil-Sen: medians of slopes, so a step slowed by another process on
  a shared machine does not move it), and read at the mean padded tokens of a step over a
  whole epoch of the trials' batches (``step_tokens``), which are known before training.

The probe candidate is the LoRA recipe (the first trial of a warm-started search), BitFit
where LoRA does not fit the model, full fine-tuning where neither does. Then one scoring of
the validation split, and one timed write of a checkpoint the size of the probe candidate's
(``write_speed``, under the studies folder where the checkpoints go): a run waits for its
last checkpoint's write (full fine-tuning of a base-size model: about 1.5 GB). A few
seconds on a small model; its numbers are stored with the plan.

The probe runs alone, before the workers start; what several trials at once do to each
other is the **throughput** (``worker_throughput``, the plan's ``Throughput``):

* **CPU workers** (``--workers N`` without GPUs, ``cores // N`` threads each:
  ``devices.place``): measured. ``co_run_speed`` times a matrix-product proxy alone and as
  N copies at once (threads of this process stand in for the workers: the products release
  the GIL and each thread runs its own pool of the slot's threads), about two seconds; each
  copy's speed is the ratio (the fastest of two runs of each), capped at
  ``cores / (N x threads)`` (the share of a core each thread can have).
* **GPU workers**: not measured (no GPU was there to measure it). One per GPU: the probe's
  speed. ``K`` sharing one GPU (``--trials-per-gpu K``): ``1/K`` each, as if the GPU were
  time-sliced with no gain from sharing: the conservative end; a small model that leaves
  the GPU idle gains more (``bench/gpu_check.py``, section sharing, measures it).
* **Workers joining from other machines** (``--joining-workers``): the probe's speed each,
  not measured (their machines are not seen here).
"""
from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from autopeft.candidate import Candidate, MethodSpec
from autopeft.data import Encoded
from autopeft.runner import Fidelity
from autopeft.devices import Slot, cpu_cores
from autopeft.search.plan import Costs, Throughput

CO_RUN_SECONDS = 0.3  # the contention proxy runs about this long alone, then with its copies
REPEATS = 2  # alone and together, each timed this many times
MIN_SPEED = 0.05  # a slot's speed is never planned below this (a measurement gone wrong)
PROBE_STEPS = 20  # timed steps, after WARMUP_STEPS untimed ones
# The timed write's size: the probe candidate's checkpoint, within these bounds (large
# enough to time the disk, not the call; small enough to cost a fraction of a second).
WRITE_BYTES = (4 * 2**20, 64 * 2**20)
WARMUP_STEPS = 3
PROBES = (Candidate([MethodSpec("lora", {"r": 8, "alpha": 16, "targets": ["query", "value"]})], 5e-4),
          Candidate([MethodSpec("bitfit")], 1e-3),
          Candidate([MethodSpec("full")], 2e-5))


def durations(stamps: list[float], skip: int = WARMUP_STEPS) -> list[float]:
    """How long each step after the first ``skip`` took (``stamps``: the time at the end of
    each step, from step 1)."""
    return [b - a for a, b in zip(stamps, stamps[1:])][max(0, skip - 1):]  # steps 2, 3, ...


def step_seconds(stamps: list[float], skip: int = WARMUP_STEPS) -> float:
    """The median duration of the steps after the first ``skip``."""
    gaps = durations(stamps, skip)
    return statistics.median(gaps) if gaps else 0.0


def step_tokens(enc: Encoded, batch_size: int, grad_accum: int, seed: int, steps: int) -> list[int]:
    """Padded tokens (rows x the batch's longest row) of each of the first ``steps``
    optimiser steps of a run seeded ``seed``: the batches the trainer draws."""
    from autopeft.train import micro_batches

    lengths = enc.lengths()
    stream = micro_batches(enc, batch_size, seed)
    return [sum(len(b) * int(lengths[b].max()) for b in (next(stream) for _ in range(grad_accum)))
            for _ in range(steps)]


def fitted_step_seconds(durations: list[float], tokens: list[int], mean_tokens: float) -> float:
    """Seconds per step at ``mean_tokens`` padded tokens, from steps that took ``durations``
    at ``tokens``: the Theil-Sen line (median slope over pairs, median intercept; robust to
    a few slowed steps). Steps all of one size, or a slope below zero, give the median."""
    slopes = [(t2 - t1) / (x2 - x1) for i, (x1, t1) in enumerate(zip(tokens, durations))
              for x2, t2 in zip(tokens[i + 1:], durations[i + 1:]) if x2 != x1]
    slope = statistics.median(slopes) if slopes else 0.0
    if slope <= 0:
        return statistics.median(durations)
    intercept = statistics.median(t - slope * x for x, t in zip(tokens, durations))
    return max(intercept + slope * mean_tokens, min(durations))


class _Warm(Exception):
    """Ends the warm-up run after its steps, before it scores anything."""


def _stop_when_warm(step: int, total: int, loss: float) -> None:
    if step >= WARMUP_STEPS:
        raise _Warm


def probe(bench: Any, rung_rows: int | None) -> Costs:
    """Seconds per step, per full scoring and per rung scoring, measured on ``bench`` (the
    trainer the trials use)."""
    fidelity = Fidelity(schedule_steps=10 * (PROBE_STEPS + WARMUP_STEPS),
                        stop_at=PROBE_STEPS + WARMUP_STEPS)
    last: Exception | None = None
    for candidate in PROBES:
        try:  # warm: start the trial process, build once, first batches
            bench.run(candidate, on_step=_stop_when_warm, fidelity=fidelity)
        except _Warm:
            pass
        except Exception as exc:  # this probe does not fit the model: the next one
            last = exc
            continue
        stamps: list[float] = []

        def on_step(step: int, total: int, loss: float) -> None:
            if step >= 1:  # when the step ended where it ran (a trial process sends them late)
                stamps.append(getattr(bench, "step_time", None) or time.perf_counter())

        start = time.perf_counter()
        outcome = bench.run(candidate, on_step=on_step, fidelity=fidelity)
        end = time.perf_counter()
        step, row_tokens = _epoch_step_seconds(bench, candidate, stamps)
        evaluation = end - stamps[-1]
        share = min(1.0, (rung_rows or len(bench.eval_data)) / max(1, len(bench.eval_data)))
        first = stamps[0] - start - step  # build and copy, before the first step
        return Costs(step_seconds=round(step, 4), eval_seconds=round(evaluation, 3),
                     rung_eval_seconds=round(evaluation * share, 3),
                     start_seconds=round(max(0.0, first), 3), probe=candidate.label,
                     write_seconds=_write_seconds(outcome), row_tokens=round(row_tokens, 1))
    raise RuntimeError(f"no probe candidate trains on this model: {last}")


def _write_seconds(outcome: Any) -> float:
    """Seconds to write the probe candidate's checkpoint at this disk's speed (0: a trainer
    that does not say what it trained)."""
    from autopeft.checkpoint import checkpoint_bytes
    from autopeft.paths import studies_dir

    trained = getattr(outcome, "trained", None)
    if not trained:
        return 0.0
    size = checkpoint_bytes(trained)
    return round(size / write_speed(studies_dir(), size), 3)


def write_speed(folder: str, size: int) -> float:
    """Bytes a second that ``checkpoint.save`` writes to ``folder``: one timed save of
    ``size`` bytes (within ``WRITE_BYTES``), deleted after."""
    import torch

    from autopeft.checkpoint import Checkpoint, save

    size = min(max(size, WRITE_BYTES[0]), WRITE_BYTES[1])
    state = Checkpoint(0, 1, (0, 0), 0, 0.0, None, 0, {"w": torch.ones(size // 4)}, {}, {}, {}, [])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".probe-write.pt")
    start = time.perf_counter()
    save(state, path)
    seconds = time.perf_counter() - start
    os.unlink(path)
    return size / max(seconds, 1e-6)


def _epoch_step_seconds(bench: Any, candidate: Candidate,
                        stamps: list[float]) -> tuple[float, float]:
    """The mean step over an epoch of the trials' batches, from the timed steps' durations
    (``fitted_step_seconds``), and the mean padded tokens of a row in that epoch; the steps'
    median and 0.0 where the batches cannot be known."""
    try:
        settings, data = bench.settings, bench.train_data
        accum = max(1, settings.grad_accum)
        per_epoch = max(1, len(data) // (settings.batch_size * accum))
        tokens = step_tokens(data, settings.batch_size, accum, candidate.seed,
                             max(per_epoch, len(stamps)))  # the probe's steps start the epoch
    except (AttributeError, TypeError, ValueError):  # a trainer without these (hf_trainer)
        return step_seconds(stamps), 0.0
    mean = statistics.fmean(tokens[:per_epoch])
    return (fitted_step_seconds(durations(stamps), tokens[WARMUP_STEPS:len(stamps)], mean),
            mean / (settings.batch_size * accum))


def _proxy(rounds: int) -> None:
    """The contention proxy: products the size of a small transformer's feed-forward layer."""
    import torch

    x, w = torch.ones(128, 384), torch.ones(384, 1536)
    for _ in range(rounds):
        x @ w


def co_run_speed(copies: int, threads: int, work: Callable[[int], None] = _proxy,
                 clock: Callable[[], float] = time.perf_counter,
                 seconds: float = CO_RUN_SECONDS) -> float:
    """Each copy's speed when ``copies`` copies of ``work`` run at once, ``threads`` torch
    threads each, against one alone (1.0: no contention): what CPU workers do to each other
    through the cores, the memory bandwidth and the caches."""
    import torch

    if copies <= 1:
        return 1.0
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rounds, alone = 1, 0.0
        while alone < seconds / 8 and rounds < 2**20:  # how many rounds make ``seconds``
            rounds *= 2
            start = clock()
            work(rounds)
            alone = clock() - start
        rounds = max(1, round(rounds * seconds / max(alone, 1e-9)))
        alone, together = math.inf, math.inf
        for _ in range(REPEATS):  # the fastest of each: a neighbour's burst slows one run
            start = clock()
            work(rounds)
            alone = min(alone, clock() - start)
            runs = [threading.Thread(target=work, args=(rounds,)) for _ in range(copies)]
            start = clock()
            for run in runs:
                run.start()
            for run in runs:
                run.join()
            together = min(together, clock() - start)
    finally:
        torch.set_num_threads(before)
    return min(1.0, alone / max(together, 1e-9))


def worker_throughput(slots: Sequence[Slot], joining: int = 0, start_seconds: float = 0.0,
                      cores: int | None = None,
                      measure: Callable[[int, int], float] | None = None) -> Throughput:
    """The plan's ``Throughput`` for the trials that run at once: this machine's ``slots``
    (``devices.place``; slot 0 is the search, the others start ``start_seconds`` later) and
    ``joining`` workers from other machines. See the module docstring for what is measured
    and what is stated."""
    n = len(slots)
    if n <= 1:
        return Throughput(1, 1.0, "", joining)
    start = round(max(0.0, start_seconds), 1)
    gpus = Counter(s.device for s in slots if s.device is not None)
    if gpus:
        k = max(gpus.values())
        if k == 1:
            return Throughput(n, 1.0, "not measured: one trial a GPU, each at the speed the "
                              "probe measured on one", joining, start)
        return Throughput(n, 1 / k, f"not measured: {k} trials sharing a GPU are planned at "
                          f"1/{k} of its speed each, as if time-sliced with no gain from "
                          "sharing; a small model gains more (bench/gpu_check.py measures it)",
                          joining, start)
    import torch

    cores = cores or cpu_cores()
    threads = slots[0].threads or torch.get_num_threads()
    bound = min(1.0, cores / (n * threads))
    measured = (measure or co_run_speed)(n, threads)
    speed = max(MIN_SPEED, min(bound, measured))
    evidence = (f"measured: {n} copies of a matrix-product proxy at {threads} thread"
                f"{'s' if threads != 1 else ''} each on {cores} core{'s' if cores != 1 else ''} "
                f"ran at {measured:.2f}x one alone")
    if bound < 1:
        evidence += f", at most {bound:.2f}: {cores} cores for {n} x {threads} threads"
    return Throughput(n, round(speed, 3), evidence, joining, start)
