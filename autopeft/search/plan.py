"""The fidelity plan: how long a search trial trains, where its rungs are, and how much of
the budget the refit keeps, chosen from the budget ratio measured on this machine.

Why: a fixed fidelity (one epoch a trial) finishes nothing in a short budget, and a tiny one
ranks candidates by noise. What a search can do is decided by the **budget ratio**
``R = budget / cost of one full-fidelity run`` (``max_steps`` steps, one scoring of the
validation split and a start-up; ``Costs.full_run``). The plan makes the budget buy
candidates at a fidelity that separates them, then continues the best to full fidelity.

The rule (all in steps of the optimiser; every number below is a module constant):

* **Full fidelity** ``max_steps`` is what ``--epochs`` over ``--train-samples`` gives: the
  most any run trains, and the length of the one learning-rate schedule every run follows
  (``schedule_steps``): a search trial stops part-way through it, "steps within one long
  schedule" (BENCHMARKS.md, "fidelity": after 90 steps of a 270-step schedule the LoRA
  recipe scored 0.764, after a 90-step schedule of its own 0.519, chance 0.509).
* **Rungs** are geometric up to full fidelity, Hyperband's ladder: ``max_steps / eta^k`` for
  k = 0, 1, 2, ..., none before the **first rung** (``first_rung``). The first rung is not a
  constant (the 90-step floor measured for one schedule on one task left a 125-step full
  fidelity with no rung at all): it is the end of the warm-up (``warmup_ratio x max_steps``:
  before it the learning rate has not reached its value) plus one window of the loss check
  (``losscheck.LOSS_WINDOW`` steps: before that the training loss cannot say whether the
  candidate learns), and never a rung that costs more to score than to reach (rung scoring
  seconds / step seconds). Measured on MiniLM/SST-2 (a 270-step schedule, warm-up 16 steps):
  every recipe still scored chance at step 30 and had separated at step 90, and the first
  rung is 90; a 125-step full fidelity gets rungs at 42 and 125. At run time a rung only
  counts once the training loss has moved off its start (``losscheck``; before that the
  pruner's decision is deferred), so a slow good recipe is not cut at a rung where every
  score is still chance.
* **R >= 1** (a full run fits): the best members always reach full fidelity. The search
  trains candidates up to ``trial_steps``, one rung of the ladder; the refit then
  *continues* the best ``refit_members`` from their search trial to ``max_steps``.
  ``trial_steps`` and ``refit_members`` are the longest rung and the most members (at most
  ``REFIT_MEMBERS``) at which ``TARGET_CANDIDATES`` candidates (counting successive halving:
  a candidate reaches the k-th rung with probability ``eta^-k``, plus scorings and start-up)
  and the refit fit in the budget; if none does, the first rung and as many members as fit
  in ``MAX_REFIT_SHARE`` of the budget (at least one). When the search already trains full
  fidelity and one seed is asked for, there is nothing to refit: the whole budget searches
  (R = 40 on MiniLM/SST-2; at R = 3 and 10 trials train a third of full fidelity). A plan
  whose trials stop before full fidelity makes the warm start try the LoRA recipe at faster
  learning rates too (``warmstart.tries_learning_rates``).
* **R of 0.9 to about 1.1** (``FULL_RUN_SNAP``; one run fits, give or take the probe's
  error, but not a search): one full run of the first recipe, ending a few seconds past the
  budget if it must: a schedule cut at 85% of its length ends on the steep part of the curve.
* **R < 0.9** (no run can reach full fidelity): the plan says so and spends
  ``SHORT_PROBE_SHARE`` of the budget on cheap probes (the warm-start recipes, LoRA first,
  and what else fits, to the first rung of the schedule the budget affords) and the rest on
  continuing the most promising one as far as the budget affords (``refit_steps`` < full
  fidelity; the schedule is planned for that length, so its learning rate still decays to
  zero).
* **Assumption: trials continue from checkpoints.** A refit run with the search trial's own
  seed continues that trial from its last step (``runner``/``refit``): re-training a member
  that the search trained to step t costs ``refit_steps - t`` steps, one scoring and a
  start-up, and that is what the plan reserves. Extra seeds (``--confirm-seeds``) train
  from step 0 and are reserved at the full cost.
* Intermediate rungs are scored on a fixed seeded subset of ``RUNG_EVAL_ROWS`` validation
  rows; the last rung and the refit on the whole validation split.
* **Workers** (``Throughput``): with ``--workers N`` (or ``--trials-per-gpu K``, or
  workers joining from other machines) the search trains ``slots`` trials at once, each at
  ``speed`` of one trial alone (what the probe measured: contention, measured or stated,
  ``probe.worker_throughput``). The search buys ``slots x speed`` times the candidates one
  process would (less what each started worker misses while it loads the model,
  ``start_seconds``), so the fidelity choice and the candidates expected use that; the refit
  runs after the workers stop, in the search process alone, at the probe's speed, so its
  share is what it costs alone. R stays the budget over one full run.
* Without a budget: every trial may train ``max_steps``; the refit only adds seeds.
  ``--trial-steps``, ``--rungs`` and ``--refit-share`` override the rule.

No torch, no optuna here: costs are measured by the caller (``probe`` in ``search/study.py``)
and the plan is plain data stored with the study.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any

from autopeft.errors import UserError
from autopeft.search.losscheck import LOSS_WINDOW

PLAN_RESERVE = 0.08  # of the time left: a trial ran 5% slower than the probe's costs said
# (MiniLM/SST-2, R = 1: 8.6 s for a predicted 8.2 s), and a run the budget cuts is lost
TARGET_CANDIDATES = 24  # candidates a budget should let the search look at
RUNG_EVAL_ROWS = 512  # validation rows scored at intermediate rungs (fixed, seeded subset)
SEPARATION_TRIALS = 4  # first-rung scores a study holds before it judges whether the rung
# separates candidates (``separates``): the warm start's first recipes, so the judgement
# comes before most of the budget is spent at that rung
REFIT_MEMBERS = 3  # the most front members the refit continues to full fidelity
MAX_REFIT_SHARE = 0.5  # when the target does not fit: the refit's members fit in this share
SHORT_PROBE_SHARE = 0.2  # below R = 1: the share of the budget for cheap probes
SHORT_MIN_PROBES = 3  # ... if it buys this many (else one run, the first recipe, no search)
FULL_RUN_SNAP = 0.9  # R from which a budget too short to search trains one full run
SHORT_SCHEDULE = 300  # steps: a schedule this short is "short" (``short_schedule``)


@dataclass(frozen=True)
class Costs:
    """Seconds measured on this machine before the search (``probe``)."""

    step_seconds: float  # one optimiser step of the probe candidate
    eval_seconds: float  # scoring the whole validation split
    rung_eval_seconds: float  # scoring the rung subset
    start_seconds: float = 0.5  # building a candidate on a fresh copy of the model
    probe: str | None = None  # the candidate measured (the LoRA recipe, else its fallbacks)
    # Writing the probe candidate's checkpoint (``probe.write_speed``): a run waits for its
    # last write at its end; the earlier ones overlap its training (``checkpoint.Writer``).
    write_seconds: float = 0.0
    # The mean padded tokens of a training row over the probe's epoch of batches: what a
    # candidate's virtual tokens add to (``budget.token_factor``; 0: not known).
    row_tokens: float = 0.0

    def run_seconds(self, steps: int) -> float:
        """One run of ``steps`` steps from its start, scored on the whole validation split,
        its last checkpoint written."""
        return (self.start_seconds + steps * self.step_seconds + self.eval_seconds
                + self.write_seconds)


@dataclass(frozen=True)
class Throughput:
    """How many trials the search trains at once and how fast each goes against one trial
    alone (the probe's costs). Why: 4 workers buy about 4x the candidates on 4 GPUs, less on
    shared CPU cores or one shared GPU; a plan sized for one process picks too short a
    fidelity for what actually runs."""

    slots: int = 1  # trials at once on this machine (the search's own included)
    speed: float = 1.0  # each one's speed against one alone, 0 < speed <= 1 (contention)
    evidence: str = ""  # how ``speed`` is known: "measured: ..." or "not measured: ..."
    joining: int = 0  # workers on other machines that will join, each at the probe's speed
    start_seconds: float = 0.0  # before a started worker's first trial (it loads the model)

    @property
    def parallel(self) -> float:
        """Trials' worth of one alone that the search trains at once."""
        return self.slots * self.speed + self.joining

    def alone_seconds(self, wall: float) -> float:
        """Seconds of one trial alone that the search trains in ``wall`` seconds: every
        worker but the search itself starts ``start_seconds`` late."""
        late = (self.slots - 1) * min(wall, self.start_seconds)
        return self.speed * (self.slots * wall - late) + self.joining * wall

    def describe(self) -> str:
        """E.g. "4 workers, each at about 0.55x alone's speed (measured: ...)"; "": one."""
        parts = []
        if self.slots > 1:
            parts.append(f"{self.slots} workers, each at about {self.speed:.2f}x alone's speed "
                         f"({self.evidence})" + (f", starting about {self.start_seconds:.0f} s "
                                                 "late (the search's own start-up)"
                                                 if self.start_seconds >= 1 else ""))
        if self.joining:
            parts.append(f"{self.joining} worker{'s' if self.joining != 1 else ''} joining from "
                         "other machines, each planned at the probe's speed (not measured: "
                         "their machines are not seen)")
        return ", and ".join(parts)


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
    ratio: float | None = None  # R: the budget over the cost of one full-fidelity run
    budget_seconds: float | None = None  # what the plan was made for (after the probe)
    refit_members: int | None = None  # members the refit's share is sized for
    throughput: Throughput | None = None  # the workers the search was sized for (None: one)

    def __post_init__(self) -> None:
        if self.schedule_steps is None:  # the longest run of the plan
            self.schedule_steps = max(self.refit_steps, self.trial_steps)

    def describe(self) -> str:
        """The plan in one paragraph, printed when the search starts."""
        parts = []
        if self.ratio is not None and self.costs and self.budget_seconds:
            full = self.costs.run_seconds(self.max_steps)
            parts.append(f"R = {self.ratio:.1f} (budget {_duration(self.budget_seconds)} / "
                         f"{full:.0f} s per full run of {self.max_steps} steps)"
                         + (": below 1, no run reaches full fidelity"
                            if self.ratio < 1 and self.refit_steps < self.max_steps else ""))
        if self.costs:
            c = self.costs
            parts.append(f"measured {c.step_seconds:.3f} s/step, {c.eval_seconds:.1f} s to score "
                         f"the validation split ({c.rung_eval_seconds:.1f} s the rung subset)"
                         + (f", {c.write_seconds:.2f} s to write a checkpoint"
                            if c.write_seconds else ""))
        parts.append(f"trials train up to {self.trial_steps} of {self.max_steps} steps (of a "
                     f"{self.schedule_steps}-step schedule), rungs at {', '.join(map(str, self.rungs))}")
        if self.expected_candidates:
            n = self.expected_candidates
            parts.append(f"about {n} candidate{'s' if n != 1 else ''}")
        if self.throughput and self.throughput.describe():
            parts.append(self.throughput.describe())
        if self.refit_steps > self.trial_steps:
            share = f"the last {self.refit_share:.0%} of the budget " if self.refit_share else ""
            who = ("the front" if not self.refit_members else "the best member"
                   if self.refit_members == 1 else f"the best {self.refit_members} members")
            alone = (", alone once the workers stop" if self.throughput
                     and self.throughput.slots + self.throughput.joining > 1 else "")
            parts.append(f"{share or 'then the refit '}continues {who} to {self.refit_steps} "
                         f"steps{alone}")
        text = f"plan ({self.source}): " + "; ".join(parts)
        return text + "".join(f". {n[0].upper()}{n[1:]}" for n in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        costs = Costs(**raw["costs"]) if raw.get("costs") else None
        throughput = Throughput(**raw["throughput"]) if raw.get("throughput") else None
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "costs": costs, "throughput": throughput,
                      "rungs": [int(r) for r in raw["rungs"]]})


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    if hours:
        return f"{hours}h{m:02d}m" if m else f"{hours}h"
    return f"{m}m{s:02d}s" if s and m else (f"{m}m" if m else f"{s}s")


def separates(scores: list[float], noise: float) -> bool:
    """Whether ``scores`` at one rung tell candidates apart: the best is more than two
    standard errors (``noise``: the rung's sampling error) above the worst. On an unseen
    sentence-pair task (RTE-like, 96 steps a full run) 35 candidates at 32 steps all scored
    0.684-0.706 with the majority class at 0.684: a rung that ranks by noise."""
    return len(scores) > 1 and max(scores) - min(scores) > 2 * noise


def lengthened(plan: Plan, eta: int, why: str) -> Plan | None:
    """The plan with fewer, longer trials: they train one rung up the ladder (``eta`` times
    as long, at most ``max_steps``) and the first rung, which did not separate, is dropped;
    the candidates expected shrink alike. None where trials already train full fidelity."""
    if plan.trial_steps >= plan.max_steps:
        return None
    t = min(plan.max_steps, plan.trial_steps * eta)
    rungs = [r for r in plan.rungs[1:] if r < t] + [t]
    expected = max(2, (plan.expected_candidates or eta) // eta)  # 1 would mean a one-run plan
    note = (f"{why}: trials now train up to {t} steps, rungs at {', '.join(map(str, rungs))} "
            f"(about {expected} candidate{'s' if expected != 1 else ''})")
    return Plan(**{**asdict(plan), "costs": plan.costs, "throughput": plan.throughput,
                   "trial_steps": t, "rungs": rungs,
                   "expected_candidates": expected, "notes": [*plan.notes, note]})


def short_schedule(plan: Plan) -> bool:
    """Whether the plan's schedule is short: the recipes run at their short rates
    (``warmstart.py``) and the default sampler draws learning rates high (``proposals.py``)."""
    return (plan.schedule_steps or plan.max_steps) <= SHORT_SCHEDULE


def first_rung(schedule_steps: int, warmup_ratio: float, costs: Costs | None = None) -> int:
    """The earliest step a rung may be at (see the module docstring): the warm-up's end plus
    one loss window, and at least the steps that cost as much as scoring the rung subset.
    The window here is the floor (``LOSS_WINDOW``), not the share of a long schedule the loss
    check waits for (``losscheck.windows``): a rung reached before the loss has moved does
    not decide (the pruner defers), so an early rung costs a scoring, never a candidate,
    while a late first rung would leave a short budget's probes no rung at all (R = 0.5 on a
    20,000-step schedule: three probes at step 571, one run at 1,233)."""
    floor = int(warmup_ratio * schedule_steps) + LOSS_WINDOW
    if costs and costs.step_seconds > 0:
        floor = max(floor, math.ceil(costs.rung_eval_seconds / costs.step_seconds))
    return max(1, floor)


def ladder(trial_steps: int, eta: int, levels: int | None = None, min_rung: int = 1) -> list[int]:
    """Rungs ``trial_steps / eta^k`` (k = 0, 1, ..., ``levels``-1; None: down to ``min_rung``),
    none before ``min_rung`` steps; the last rung is always ``trial_steps``."""
    rungs, k = {trial_steps}, 1
    while levels is None or k < levels:
        rung = max(1, math.ceil(trial_steps / eta ** k))
        if rung < min_rung or rung == 1 and 1 in rungs:
            break
        rungs.add(rung)
        k += 1
    return sorted(r for r in rungs if r >= min(min_rung, trial_steps))


def candidate_seconds(trial_steps: int, eta: int, costs: Costs, min_rung: int = 1,
                      rungs: list[int] | None = None) -> float:
    """Expected seconds one candidate costs under successive halving on its rungs (``rungs``,
    else ``ladder(trial_steps, eta, min_rung=min_rung)``): all reach the first rung, a share
    ``eta^-k`` the k-th."""
    rungs = rungs or ladder(trial_steps, eta, min_rung=min_rung)
    seconds, previous = costs.start_seconds, 0
    for k, rung in enumerate(rungs):
        reach = eta ** -k
        evaluation = costs.eval_seconds if rung == rungs[-1] else costs.rung_eval_seconds
        seconds += reach * ((rung - previous) * costs.step_seconds + evaluation)
        previous = rung
    return seconds


def refit_seconds(trial_steps: int, refit_steps: int, members: int, seeds: int,
                  costs: Costs) -> float:
    """The refit of ``members``: each continues its search trial from ``trial_steps`` to
    ``refit_steps`` (nothing if already there), and ``seeds - 1`` more seeds train from 0."""
    go_on = (costs.run_seconds(refit_steps - trial_steps) if refit_steps > trial_steps else 0.0)
    return members * (go_on + (seeds - 1) * costs.run_seconds(refit_steps))


def continuation_seconds(wall_seconds: float, scoring_seconds: float, steps_trained: int,
                         steps: int, setup_seconds: float = 0.0, from_start: bool = False) -> float:
    """Seconds to continue a run ``steps`` more steps and score it, at the rate of a trial
    that took ``wall_seconds`` for ``steps_trained`` steps, ``scoring_seconds`` of them
    scoring and ``setup_seconds`` before its first step (``TrainResult.setup_seconds``).
    Both are taken out of the rate and paid once: counted per step, a 45-step trial's
    scoring (1.8 of its 4.7 s, MiniLM/SST-2) made 89 more steps cost 9.2 s instead of 8, and
    the refit of the R = 3 leader was skipped with 9 s left. The setup is paid again only by
    a run ``from_start`` (no checkpoint): a continuation restores a checkpoint instead of
    measuring the schedule's longest batch (MiniLM/STS-B, BitFit: a 34-step trial 9.6 s,
    0.7 of them setup, 2.6 scoring; its continuation to 100 steps 14.8 s; predicted 15.0,
    and 16.3 with the setup counted per step)."""
    scoring = min(max(0.0, scoring_seconds), wall_seconds)
    setup = min(max(0.0, setup_seconds), wall_seconds - scoring)
    rate = (wall_seconds - scoring - setup) / max(1, steps_trained)
    return rate * steps + scoring + (setup if from_start else 0.0)


def refit_shortfall(plan: Plan, member_seconds: float | None) -> float:
    """Seconds the refit's ``refit_members`` need beyond the time the plan kept for them
    (its ``refit_share`` of ``budget_seconds``), when continuing one member from its trial to
    ``refit_steps`` takes ``member_seconds`` (the refit's own estimate, from the rate the
    trials measured: ``refit._runs``). 0 when the plan kept enough, has no refit members or
    nothing is measured yet."""
    if not member_seconds or not plan.refit_members or not plan.budget_seconds:
        return 0.0
    return max(0.0, plan.refit_members * member_seconds - plan.refit_share * plan.budget_seconds)


def make_plan(max_steps: int, budget_seconds: float | None, costs: Costs | None, eta: int = 3,
              seeds: int = 1, trial_steps: int | None = None, refit_share: float | None = None,
              rungs: list[int] | None = None, warmup_ratio: float = 0.06,
              throughput: Throughput | None = None) -> Plan:
    """The plan for a search (see the module docstring); ``trial_steps``, ``refit_share`` and
    ``rungs`` override the rule; ``throughput``: the workers (None: one process)."""
    overridden = any(v is not None for v in (trial_steps, refit_share, rungs))
    source = "override" if overridden else "budget"
    if rungs:
        trial_steps = rungs[-1]
    first = first_rung(max_steps, warmup_ratio, costs)
    if budget_seconds is None or costs is None:  # nothing to fit: the overrides or the data
        t = min(max_steps, trial_steps or max_steps)
        refit = t if refit_share == 0 else max_steps
        return Plan(max_steps, t, refit, rungs or ladder(t, eta, min_rung=first),
                    refit_share=refit_share or 0.0, schedule_steps=max(refit, max_steps),
                    source="override" if overridden else "no budget")
    ratio = budget_seconds / costs.run_seconds(max_steps)
    worth = throughput.alone_seconds if throughput else float  # wall -> one trial's seconds
    budget_seconds *= 1 - PLAN_RESERVE  # what the probe does not see (pipe, Python, noise)
    if ratio * (1 - PLAN_RESERVE) < 1 and trial_steps is None:
        return _short_plan(max_steps, budget_seconds, costs, eta, warmup_ratio, ratio,
                           refit_share, source, throughput)
    full_ladder = ladder(max_steps, eta, min_rung=first)
    if trial_steps is not None:
        t = min(max_steps, trial_steps)
        members = _members_that_fit(t, max_steps, budget_seconds, costs, seeds)
    else:
        t, members = _fit(full_ladder, max_steps, budget_seconds, eta, costs, seeds, worth)
        if budget_seconds - refit_seconds(t, max_steps, members, seeds, costs) < candidate_seconds(
                t, eta, costs, rungs=[r for r in full_ladder if r <= t]) and seeds == 1:
            return _short_plan(max_steps, budget_seconds, costs, eta, warmup_ratio, ratio,
                               refit_share, source, throughput)  # not even one candidate and its refit
    search_rungs = rungs or [r for r in full_ladder if r < t] + [t]
    if t == max_steps and seeds == 1:
        members = 0  # a refit would repeat the search trials exactly
    share = refit_seconds(t, max_steps, members, seeds, costs) / budget_seconds
    if refit_share is not None:
        share = refit_share
    share = min(share, 0.95)
    notes = []
    if share == 0.0:
        notes.append("no refit: the search trials train full fidelity")
    expected = max(1, int(worth(budget_seconds * (1 - share))
                          / candidate_seconds(t, eta, costs, rungs=search_rungs)))
    if expected == 1 and seeds == 1 and trial_steps is None:
        # One candidate, its trial and then its refit: the same run cut in two, with one more
        # scoring between them. One run as long as the budget affords is that run, cheaper.
        return _short_plan(max_steps, budget_seconds, costs, eta, warmup_ratio, ratio,
                           0.0, source, throughput)
    if expected < TARGET_CANDIDATES:
        notes.append(f"the budget fits about {expected} candidate{'s' if expected != 1 else ''} "
                     f"at {t} steps; a longer --budget looks at more")
    return Plan(max_steps, t, max_steps if share else t, search_rungs, refit_share=round(share, 4),
                schedule_steps=max_steps, expected_candidates=expected, costs=costs,
                source=source, notes=notes, ratio=round(ratio, 2), budget_seconds=budget_seconds,
                refit_members=members or None, throughput=throughput)


def _fit(full_ladder: list[int], max_steps: int, budget: float, eta: int, costs: Costs,
         seeds: int, worth: Callable[[float], float] = float) -> tuple[int, int]:
    """The longest search rung and the most refit members (``REFIT_MEMBERS`` down to 1) at
    which ``TARGET_CANDIDATES`` candidates (``worth``: the workers' trial seconds in a wall
    time, ``Throughput.alone_seconds``) and the refit (alone) fit
    in ``budget``; else the first rung and the members that fit in ``MAX_REFIT_SHARE`` of it."""
    for members in range(REFIT_MEMBERS, 0, -1):
        for t in reversed(full_ladder):
            refit = refit_seconds(t, max_steps, members if (t < max_steps or seeds > 1) else 0,
                                  seeds, costs)
            search_rungs = [r for r in full_ladder if r <= t]
            search = TARGET_CANDIDATES * candidate_seconds(t, eta, costs, rungs=search_rungs)
            if search <= worth(budget - refit):
                return t, members
    t = full_ladder[0]
    return t, _members_that_fit(t, max_steps, budget, costs, seeds)


def _members_that_fit(t: int, max_steps: int, budget: float, costs: Costs, seeds: int) -> int:
    one = refit_seconds(t, max_steps, 1, seeds, costs)
    if one <= 0:
        return REFIT_MEMBERS
    return max(1, min(REFIT_MEMBERS, int(MAX_REFIT_SHARE * budget / one)))


def _short_plan(max_steps: int, budget: float, costs: Costs, eta: int, warmup_ratio: float,
                ratio: float, refit_share: float | None, source: str,
                throughput: Throughput | None = None) -> Plan:
    """When the budget cannot both search and continue a member to full fidelity (R < 1, or
    just above): cheap probes to the first rung, then the most promising one continued as far
    as the rest of the budget goes; or, where probes would cost more than
    ``SHORT_PROBE_SHARE`` of the budget, no probes: one run (the first recipe) as long as
    the budget affords."""
    if ratio >= FULL_RUN_SNAP and not refit_share:
        # Within the probe's own error of one full run (R 0.9-1.1): the whole schedule, a few
        # seconds past the budget (``objective.ONE_RUN_GRACE`` lets the one run finish), is
        # worth more than a cut one. Measured: MiniLM/SST-2, a 162-step schedule, R 0.91-0.97
        # trained the LoRA recipe 128-140 steps to chance (0.49-0.53); 162 steps scored 0.54-0.71.
        over = costs.run_seconds(max_steps) - budget / (1 - PLAN_RESERVE)
        note = (f"the budget is too short to search; it trains one candidate (the first "
                f"recipe) to full fidelity ({max_steps} steps), no search"
                + (f", ending about {over:.0f} s past the budget" if over >= 1 else ""))
        return Plan(max_steps, max_steps, max_steps, [max_steps], schedule_steps=max_steps,
                    expected_candidates=1, costs=costs, source=source, notes=[note],
                    ratio=round(ratio, 2), budget_seconds=budget, throughput=throughput)
    alone = max(1, min(max_steps, int((budget - costs.start_seconds - costs.eval_seconds)
                                      / costs.step_seconds)))
    first = min(first_rung(alone, warmup_ratio, costs), alone)
    t = ladder(alone, eta, min_rung=first)[0]
    probes = SHORT_PROBE_SHARE * budget
    one_probe = candidate_seconds(t, eta, costs, rungs=[t])  # alone; on a busy slot / speed
    worth = throughput.alone_seconds if throughput else float  # wall -> one trial's seconds
    longest = min(max_steps, t + int((budget - probes - costs.start_seconds - costs.eval_seconds)
                                     / costs.step_seconds))
    below = (f"the budget affords no full-fidelity run ({max_steps} steps)" if ratio < 1
             else f"the budget is too short to search and then train to full fidelity "
             f"({max_steps} steps)")
    if (worth(probes) < SHORT_MIN_PROBES * one_probe or longest <= t or refit_share == 0
            or one_probe / (throughput.speed if throughput else 1.0) > probes):
        note = (f"{below}; it trains one candidate (the first recipe) for {alone} steps, "
                f"no search")
        return Plan(max_steps, alone, alone, [alone], schedule_steps=alone, expected_candidates=1,
                    costs=costs, source=source, notes=[note], ratio=round(ratio, 2),
                    budget_seconds=budget, throughput=throughput)
    share = refit_share if refit_share is not None else refit_seconds(t, longest, 1, 1, costs) / budget
    expected = max(1, int(worth(budget * (1 - share)) / one_probe))
    note = (f"{below}; it probes about {expected} candidates (the recipes first) to step {t}, "
            f"then continues the most promising one to step {longest}")
    return Plan(max_steps, t, longest, [t], refit_share=round(min(share, 0.95), 4),
                schedule_steps=longest, expected_candidates=expected, costs=costs, source=source,
                notes=[note], ratio=round(ratio, 2), budget_seconds=budget, refit_members=1,
                throughput=throughput)


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
