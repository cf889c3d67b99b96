"""Measure what training and scoring cost on this machine, before the plan is made.

A few optimiser steps of a small standard candidate (the LoRA recipe; BitFit or full
fine-tuning where LoRA does not fit the model), then one scoring of the validation split.
Costs a few seconds on a small model; its numbers are stored with the plan.
"""
from __future__ import annotations

import time
from typing import Any

from autopeft.candidate import Candidate, MethodSpec
from autopeft.runner import Fidelity
from autopeft.search.plan import Costs

PROBE_STEPS = 6  # timed steps, after WARMUP_STEPS untimed ones (allocator, kernels)
WARMUP_STEPS = 2
PROBES = (Candidate([MethodSpec("lora", {"r": 8, "alpha": 16, "targets": ["query", "value"]})], 5e-4),
          Candidate([MethodSpec("bitfit")], 1e-3),
          Candidate([MethodSpec("full")], 2e-5))


def probe(bench: Any, rung_rows: int | None) -> Costs:
    """Seconds per step, per full scoring and per rung scoring, measured on ``bench``."""
    stamps: list[float] = []
    last: Exception | None = None
    for candidate in PROBES:
        stamps.clear()
        start = time.perf_counter()
        try:
            bench.run(candidate, on_step=lambda *_: stamps.append(time.perf_counter()),
                      fidelity=Fidelity(schedule_steps=10 * (PROBE_STEPS + WARMUP_STEPS),
                                        stop_at=PROBE_STEPS + WARMUP_STEPS))
        except Exception as exc:  # this probe does not fit the model: the next one
            last = exc
            continue
        end = time.perf_counter()
        step = (stamps[-1] - stamps[WARMUP_STEPS - 1]) / max(1, len(stamps) - WARMUP_STEPS)
        evaluation = end - stamps[-1]
        share = min(1.0, (rung_rows or len(bench.eval_data)) / max(1, len(bench.eval_data)))
        first = stamps[0] - start - step  # build and copy, before the first step
        return Costs(step_seconds=round(step, 4), eval_seconds=round(evaluation, 3),
                     rung_eval_seconds=round(evaluation * share, 3),
                     start_seconds=round(max(0.0, first), 3))
    raise RuntimeError(f"no probe candidate trains on this model: {last}")
