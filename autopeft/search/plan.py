"""The fidelity plan: how long a search trial trains, where its rungs are, and how much of
the budget the refit keeps, chosen from the budget and step costs measured on this machine.

Why: a fixed fidelity (one epoch a trial) finishes nothing in a short budget, and a tiny one
ranks candidates by noise. The plan makes the budget buy a number of candidates at a fidelity
that separates them, then re-trains the front longer (the refit).

The rule (all in steps of the optimiser; every number below is a module constant):

* **Full fidelity** ``max_steps`` is what ``--epochs`` over ``--train-samples`` gives: the
  most any run trains.
* **Search fidelity** ``trial_steps``: the largest number of steps (<= ``max_steps``) at
  which ``TARGET_CANDIDATES`` candidates fit in the search share of the budget, counting
  successive halving (a candidate reaches rung k with probability ``eta^-k``), the rung
  evaluations and a start-up per trial; never below ``MIN_TRIAL_STEPS`` (then fewer
  candidates fit, and the plan says how many).
* **Rungs**: ``trial_steps / eta^k`` for k = 2, 1, 0, dropping any below ``MIN_RUNG_STEPS``
  (scores after fewer steps are chance: BENCHMARKS.md, "fidelity"). Intermediate rungs are
  scored on a fixed seeded subset of ``RUNG_EVAL_ROWS`` validation rows; the last rung and
  the refit on the whole validation split.
* **Cut**: a trial follows the learning-rate schedule of the refit (warm-up and decay
  planned for ``refit_steps``) and stops at ``trial_steps``: "steps within one long
  schedule", which ranked candidates like their refit scores better than short schedules
  (BENCHMARKS.md, "fidelity"). With the same seed a trial is the exact start of its refit.
* **Refit**: ``REFIT_SHARE`` of the budget re-trains the front at ``refit_steps``: what
  ``REFIT_MEMBERS`` members (times the seeds asked for) can afford, at least
  ``trial_steps`` and at most ``max_steps``. When that is no longer than the search trials
  and one seed is asked for, nothing would change: the refit's share goes to the search.
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
MIN_RUNG_STEPS = 30  # no rung before this step: earlier scores are noise
RUNG_EVAL_ROWS = 512  # validation rows scored at intermediate rungs (fixed, seeded subset)
REFIT_SHARE = 0.25  # of the budget, kept for re-training the front
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
    rung_eval_rows: int | None = RUNG_EVAL_ROWS  # None: intermediate rungs score everything
    expected_candidates: int | None = None
    costs: Costs | None = None
    source: str = "budget"  # budget | no budget | override | study (a resumed study's plan)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The plan in one paragraph, printed when the search starts."""
        parts = []
        if self.costs:
            c = self.costs
            parts.append(f"measured {c.step_seconds:.3f} s/step, {c.eval_seconds:.1f} s to score "
                         f"the validation split ({c.rung_eval_seconds:.1f} s the rung subset)")
        parts.append(f"trials train up to {self.trial_steps} of {self.max_steps} steps "
                     f"(schedule of {self.refit_steps}), rungs at {', '.join(map(str, self.rungs))}")
        if self.expected_candidates:
            parts.append(f"about {self.expected_candidates} candidates")
        if self.refit_share:
            parts.append(f"the last {self.refit_share:.0%} of the budget re-trains the front "
                         f"at {self.refit_steps} steps")
        return f"plan ({self.source}): " + "; ".join(parts) + "".join(f". {n}" for n in self.notes)

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
                    source="override" if overridden else "no budget")
    share = REFIT_SHARE if refit_share is None else refit_share
    search = budget_seconds * (1 - share)
    t = trial_steps or _fit_trial_steps(max_steps, search, eta, costs)
    t = min(t, max_steps)
    per_member = share * budget_seconds / (REFIT_MEMBERS * seeds)
    affordable = int((per_member - costs.eval_seconds - costs.start_seconds) / costs.step_seconds)
    refit = min(max_steps, max(t, affordable))
    notes = []
    if refit == t and seeds == 1 and refit_share is None:
        share, search = 0.0, budget_seconds  # a refit would repeat the search trials exactly
        notes.append("no refit: the budget affords no longer training than the search trials")
    expected = max(1, int(search / candidate_seconds(t, eta, costs)))
    if expected < TARGET_CANDIDATES:
        notes.append(f"the budget fits about {expected} candidates at the minimum fidelity "
                     f"({t} steps); a longer --budget looks at more")
    return Plan(max_steps, t, refit, rungs or ladder(t, eta), refit_share=share,
                expected_candidates=expected, costs=costs,
                source="override" if overridden else "budget", notes=notes)


def _fit_trial_steps(max_steps: int, search_seconds: float, eta: int, costs: Costs) -> int:
    """The largest trial length at which TARGET_CANDIDATES fit (bisection; cost grows with
    steps), at least MIN_TRIAL_STEPS."""
    floor = min(max_steps, MIN_TRIAL_STEPS)
    per_candidate = search_seconds / TARGET_CANDIDATES
    if candidate_seconds(max_steps, eta, costs) <= per_candidate:
        return max_steps
    lo, hi = floor, max_steps
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if candidate_seconds(mid, eta, costs) <= per_candidate:
            lo = mid
        else:
            hi = mid - 1
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
