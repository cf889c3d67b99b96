"""Arm (D) of bench/search_quality.py: the fidelity plan as it was on main before the budget
ratio (issue 19), frozen here so the benchmark can run it against the new default. Not part
of the package: ``search_quality.py`` puts ``old_make_plan`` in place of
``autopeft.search.study.make_plan`` in arm (D)'s search process.

The old rule: search trials of ``trial_steps`` (the longest at which 24 candidates and a refit
of 3 members, ``eta`` times longer, fit; at least 100 steps), rungs ``trial_steps / eta^k``
for k = 2, 1, 0 with none before step 90, the refit restarting members from step 0 at
``min(max_steps, eta x trial_steps)`` and 25% of the budget when the shortest search leaves
less. Copied from autopeft/search/plan.py at commit 6a0654c (only what the rule needs).
"""
from __future__ import annotations

import math
from typing import Any

from autopeft.search.plan import Costs, Plan
from autopeft.search.plan import candidate_seconds as new_candidate_seconds

TARGET_CANDIDATES = 24
MIN_TRIAL_STEPS = 100
MIN_RUNG_STEPS = 90
REFIT_SHARE = 0.25
REFIT_MEMBERS = 3


def ladder(trial_steps: int, eta: int, levels: int = 3, min_rung: int = MIN_RUNG_STEPS) -> list[int]:
    rungs = {max(1, math.ceil(trial_steps / eta ** k)) for k in range(levels)}
    return sorted({r for r in rungs if r >= min(min_rung, trial_steps)} | {trial_steps})


def candidate_seconds(trial_steps: int, eta: int, costs: Costs) -> float:
    """The package's successive-halving cost, on the old ladder."""
    return new_candidate_seconds(trial_steps, eta, costs, rungs=ladder(trial_steps, eta))


def old_make_plan(max_steps: int, budget_seconds: float | None, costs: Costs | None, eta: int = 3,
                  seeds: int = 1, trial_steps: int | None = None, refit_share: float | None = None,
                  rungs: list[int] | None = None, *_: Any, **__: Any) -> Plan:
    """The old ``make_plan`` (the budget path; overrides as before)."""
    overridden = any(v is not None for v in (trial_steps, refit_share, rungs))
    if rungs:
        trial_steps = rungs[-1]
    if budget_seconds is None or costs is None:
        t = min(max_steps, trial_steps or max_steps)
        refit = t if refit_share == 0 else max_steps
        return Plan(max_steps, t, refit, rungs or ladder(t, eta), refit_share=refit_share or 0.0,
                    schedule_steps=max(refit, _refit_steps(t, max_steps, eta)),
                    source="override" if overridden else "no budget")
    notes = []
    t = min(max_steps, trial_steps or _fit_trial_steps(max_steps, budget_seconds, eta, costs, seeds))
    refit = _refit_steps(t, max_steps, eta)
    if refit == t and seeds == 1:
        share = 0.0
    else:
        share = _refit_seconds(refit, costs, seeds) / budget_seconds
        if share > REFIT_SHARE and trial_steps is None and t == _floor(max_steps):
            share = REFIT_SHARE
            per_run = share * budget_seconds / (REFIT_MEMBERS * seeds)
            refit = max(t, min(refit, int((per_run - costs.eval_seconds - costs.start_seconds)
                                          / costs.step_seconds)))
            if refit == t and seeds == 1:
                share = 0.0
    if refit_share is not None:
        share = refit_share
    if share == 0.0 and refit > t and refit_share is None:
        refit = t
    if share == 0.0:
        notes.append("no refit: the budget affords no longer training than the search trials")
    expected = max(1, int(budget_seconds * (1 - share) / candidate_seconds(t, eta, costs)))
    return Plan(max_steps, t, refit, rungs or ladder(t, eta), refit_share=round(share, 4),
                schedule_steps=max(refit, _refit_steps(t, max_steps, eta)),
                expected_candidates=expected, costs=costs,
                source="old rule (bench arm D)", notes=notes)


def _floor(max_steps: int) -> int:
    return min(max_steps, MIN_TRIAL_STEPS)


def _refit_steps(trial_steps: int, max_steps: int, eta: int) -> int:
    return min(max_steps, eta * trial_steps)


def _refit_seconds(refit_steps: int, costs: Costs, seeds: int) -> float:
    return REFIT_MEMBERS * seeds * (refit_steps * costs.step_seconds + costs.eval_seconds
                                    + costs.start_seconds)


def _fit_trial_steps(max_steps: int, budget: float, eta: int, costs: Costs, seeds: int) -> int:
    def total(t: int) -> float:
        refit = _refit_steps(t, max_steps, eta)
        spare = refit == t and seeds == 1
        return (TARGET_CANDIDATES * candidate_seconds(t, eta, costs)
                + (0.0 if spare else _refit_seconds(refit, costs, seeds)))

    if total(max_steps) <= budget:
        return max_steps
    lo, hi = _floor(max_steps), max_steps - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid - 1)
    return lo
