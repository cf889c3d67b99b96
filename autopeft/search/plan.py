"""The fidelity plan: how long a search trial trains, where its rungs are, and how much of
the budget the refit keeps, chosen from the budget and step costs measured on this machine.

Why: a fixed fidelity (one epoch a trial) finishes nothing in a short budget, and a tiny one
ranks candidates by noise. The plan makes the budget buy a number of candidates at a fidelity
that separates them, then re-trains the front longer (the refit).

The rule (all in steps of the optimiser; every number below is a module constant):

* **Full fidelity** ``max_steps`` is what ``--epochs`` over ``--train-samples`` gives: the
  most any run trains.
* **Search fidelity** ``trial_steps`` and **refit fidelity** ``refit_steps = min(max_steps,
  eta x trial_steps)`` (one rung further): the longest trial at which ``TARGET_CANDIDATES``
  candidates (counting successive halving: a candidate reaches rung k with probability
  ``eta^-k``, the rung evaluations and a start-up per trial) *and* the refit of
  ``REFIT_MEMBERS`` members (times the seeds asked for) fit in the budget; never below
  ``MIN_TRIAL_STEPS`` (then fewer candidates fit, the plan says how many, and the refit gets
  ``REFIT_SHARE`` of the budget at the length that share affords). The refit's share of the
  budget is what it costs. When the search trials already train everything and one seed is
  asked for, there is nothing to refit: the whole budget searches.
* **Rungs**: ``trial_steps / eta^k`` for k = 2, 1, 0, dropping any below ``MIN_RUNG_STEPS``
  (scores after fewer steps are chance: BENCHMARKS.md, "fidelity"). Intermediate rungs are
  scored on a fixed seeded subset of ``RUNG_EVAL_ROWS`` validation rows; the last rung and
  the refit on the whole validation split.
* **Cut**: every run follows one learning-rate schedule (warm-up and decay planned for
  ``schedule_steps = min(max_steps, eta x trial_steps)``, or the refit's length if longer);
  a search trial stops at ``trial_steps``, the refit at ``refit_steps``: "steps within one
  long schedule". BENCHMARKS.md ("fidelity") measured it against short schedules: after 90
  steps of a 270-step schedule the LoRA recipe scored 0.764, after a 90-step schedule 0.519
  (chance 0.509). With the same seed a trial is the exact start of its refit.
* The refit re-trains the front's members, most promising first, while the budget lasts.
* Without a budget: every trial may train ``max_steps``; the refit only adds seeds.

No torch, no optuna here: costs are measured by the caller (``probe`` in ``search/study.py``)
and the plan is plain data stored with the study.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from autopeft.errors import UserError

TARGET_CANDIDATES = 24  # candidates a budget should let the search look at
MIN_TRIAL_STEPS = 100  # a search trial trains at least this much (or max_steps if fewer)
MIN_RUNG_STEPS = 90  # no rung before this step: at 30 steps every recipe still scored chance
# on MiniLM/SST-2 and at 90 they had separated (BENCHMARKS.md, "fidelity")
RUNG_EVAL_ROWS = 512  # validation rows scored at intermediate rungs (fixed, seeded subset)
REFIT_SHARE = 0.25  # of the budget for the refit, when even the shortest search leaves less
REFIT_MEMBERS = 3  # the refit share is sized to re-train this many front members


@dataclass(frozen=True)
class Costs:
    """Seconds measured on this machine before the search (``probe``)."""

    step_seconds: float  # one optimiser step of the probe candidate
    eval_seconds: float  # scoring the whole validation split
    rung_eval_seconds: float  # scoring the rung subset
    start_seconds: float = 0.5  # building a candidate on a fresh copy of the model


@dataclass
class Plan:
    max_steps: int
    trial_steps: int
    refit_steps: int
    rungs: list[int]
    refit_share: float = 0.0
    schedule_steps: int | None = None  # the learning-rate schedule every run follows
    rung_eval_rows: int | None = RUNG_EVAL_ROWS  # None: intermediate rungs score everything
    expected_candidates: int | None = None
    costs: Costs | None = None
    source: str = "budget"  # budget | no budget | override | study (a resumed study's plan)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.schedule_steps is None:  # the longest run of the plan
            self.schedule_steps = max(self.refit_steps, self.trial_steps)

    def describe(self) -> str:
        """The plan in one paragraph, printed when the search starts."""
        parts = []
        if self.costs:
            c = self.costs
            parts.append(f"measured {c.step_seconds:.3f} s/step, {c.eval_seconds:.1f} s to score "
                         f"the validation split ({c.rung_eval_seconds:.1f} s the rung subset)")
        parts.append(f"trials train up to {self.trial_steps} of {self.max_steps} steps (of a "
                     f"{self.schedule_steps}-step schedule), rungs at {', '.join(map(str, self.rungs))}")
        if self.expected_candidates:
            n = self.expected_candidates
            parts.append(f"about {n} candidate{'s' if n != 1 else ''}")
        if self.refit_steps > self.trial_steps:
            share = f"the last {self.refit_share:.0%} of the budget " if self.refit_share else ""
            parts.append(f"{share or 'then the refit '}re-trains the front at "
                         f"{self.refit_steps} steps")
        text = f"plan ({self.source}): " + "; ".join(parts)
        return text + "".join(f". {n[0].upper()}{n[1:]}" for n in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        costs = Costs(**raw["costs"]) if raw.get("costs") else None
        return cls(**{**raw, "costs": costs, "rungs": [int(r) for r in raw["rungs"]]})


def ladder(trial_steps: int, eta: int, levels: int = 3, min_rung: int = MIN_RUNG_STEPS) -> list[int]:
    """Rungs ``trial_steps / eta^k`` (k = levels-1 .. 0), none before ``min_rung`` steps; the
    last rung is always ``trial_steps``."""
    rungs = {max(1, math.ceil(trial_steps / eta ** k)) for k in range(levels)}
    return sorted({r for r in rungs if r >= min(min_rung, trial_steps)} | {trial_steps})


def candidate_seconds(trial_steps: int, eta: int, costs: Costs) -> float:
    """Expected seconds one candidate costs under successive halving on ``ladder``: all
    reach the first rung, a share ``eta^-k`` the k-th."""
    rungs = ladder(trial_steps, eta)
    seconds, previous = costs.start_seconds, 0
    for k, rung in enumerate(rungs):
        reach = eta ** -k
        evaluation = costs.eval_seconds if rung == rungs[-1] else costs.rung_eval_seconds
        seconds += reach * ((rung - previous) * costs.step_seconds + evaluation)
        previous = rung
    return seconds


def make_plan(max_steps: int, budget_seconds: float | None, costs: Costs | None, eta: int = 3,
              seeds: int = 1, trial_steps: int | None = None, refit_share: float | None = None,
              rungs: list[int] | None = None) -> Plan:
    """The plan for a search (see the module docstring); ``trial_steps``, ``refit_share`` and
    ``rungs`` override the rule."""
    overridden = any(v is not None for v in (trial_steps, refit_share, rungs))
    if rungs:
        trial_steps = rungs[-1]
    if budget_seconds is None or costs is None:  # nothing to fit: the overrides or the data
        t = min(max_steps, trial_steps or max_steps)
        refit = t if refit_share == 0 else max_steps
        return Plan(max_steps, t, refit, rungs or ladder(t, eta),
                    refit_share=refit_share or 0.0,
                    schedule_steps=max(refit, _refit_steps(t, max_steps, eta)),
                    source="override" if overridden else "no budget")
    notes = []
    t = min(max_steps, trial_steps or _fit_trial_steps(max_steps, budget_seconds, eta, costs, seeds))
    refit = _refit_steps(t, max_steps, eta)
    if refit == t and seeds == 1:
        share = 0.0  # a refit would repeat the search trials exactly
    else:
        share = _refit_seconds(refit, costs, seeds) / budget_seconds
        if share > REFIT_SHARE and trial_steps is None and t == _floor(max_steps):
            # Even the shortest search leaves too little: the refit gets its share, shorter.
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
    if expected < TARGET_CANDIDATES:
        notes.append(f"the budget fits about {expected} candidates at the minimum fidelity "
                     f"({t} steps); a longer --budget looks at more")
    return Plan(max_steps, t, refit, rungs or ladder(t, eta), refit_share=round(share, 4),
                schedule_steps=max(refit, _refit_steps(t, max_steps, eta)),
                expected_candidates=expected, costs=costs,
                source="override" if overridden else "budget", notes=notes)


def _floor(max_steps: int) -> int:
    return min(max_steps, MIN_TRIAL_STEPS)


def _refit_steps(trial_steps: int, max_steps: int, eta: int) -> int:
    """The refit trains one rung further than the search: ``eta`` times, at most everything."""
    return min(max_steps, eta * trial_steps)


def _refit_seconds(refit_steps: int, costs: Costs, seeds: int) -> float:
    return REFIT_MEMBERS * seeds * (refit_steps * costs.step_seconds + costs.eval_seconds
                                    + costs.start_seconds)


def _fit_trial_steps(max_steps: int, budget: float, eta: int, costs: Costs, seeds: int) -> int:
    """The longest trial at which TARGET_CANDIDATES candidates and the refit of
    REFIT_MEMBERS members (``eta`` times longer) fit in ``budget``; at least the floor."""
    def total(t: int) -> float:
        refit = _refit_steps(t, max_steps, eta)
        spare = refit == t and seeds == 1
        return (TARGET_CANDIDATES * candidate_seconds(t, eta, costs)
                + (0.0 if spare else _refit_seconds(refit, costs, seeds)))

    if total(max_steps) <= budget:
        return max_steps
    lo, hi = _floor(max_steps), max_steps - 1
    while lo < hi:  # total() grows with t below max_steps
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid - 1)
    return lo


def parse_rungs(text: str | None) -> list[int] | None:
    """``--rungs 30,90,270``: increasing positive step counts."""
    if text is None:
        return None
    try:
        rungs = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        rungs = []
    if not rungs or any(r < 1 for r in rungs) or rungs != sorted(set(rungs)):
        raise UserError(f"cannot read --rungs {text!r}; give increasing step counts, e.g. 30,90,270")
    return rungs
