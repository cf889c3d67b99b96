"""The refit: the last share of the budget re-trains the front at the refit's fidelity.

Search trials are scored at the search fidelity (the plan's ``trial_steps``), which ranks
candidates but flatters or hides some of them. The refit takes the search front's members,
most promising first (the largest share of the front's hypervolume each one alone adds),
spread over the front (``spread``: distinct methods or size bands before variants of one),
and trains each at ``refit_steps`` with the candidate's seed and ``--confirm-seeds`` more. The
run with the candidate's own seed continues the search trial from its checkpoint (the
search trial is the exact start of it: same schedule; ``search/continuation.py``), from
step 0 where this machine has none; the other seeds train from 0. A run whose length the
search trial already trained is not repeated: same candidate, same seed, same score.

The result is added to the study as a *refit trial*: same parameters and candidate, values =
the means over the runs, user attributes ``confirm_of`` (the search trial),
``confirm_scores``, ``confirm_seeds``, ``confirm_mean``, ``confirm_std`` (sample standard
deviation), ``refit_steps``, ``search_score``, ``steps`` (= ``refit_steps``),
``steps_trained`` (the steps its runs trained, over all seeds) and ``continued_from``.
Finished Optuna trials cannot change, so the search trial stays as it was and is
superseded: the reported front holds the refit trials and the members the refit did not
reach (``autopeft/results.py``). A member the budget cuts short keeps the seeds it
finished; one with no finished run is left out of the refit front.

The first member may end up to ``FIRST_MEMBER_GRACE`` of the budget past it, as Optuna's
timeout lets a running trial finish; later members must fit. Why: the refit is what puts
the front's best at full fidelity, and it is all or nothing. On MiniLM/SST-2 at R = 3 the
leader's continuation was predicted at 11.2 s with 10.2 s left, and the front kept its
score at a third of full fidelity.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from autopeft.candidate import Candidate
from autopeft.protocols import Reporter, Trainer
from autopeft.results import (CANDIDATE, CONFIRM_OF, CONTINUED_FROM, PREDICTED_MEMORY, STEPS,
                              STEPS_TRAINED, WARM_START, Record, front, rank_correlation, record,
                              records, size_band)
from autopeft.runner import Fidelity
from autopeft.search.budget import Phase
from autopeft.search.continuation import Checkpoints
from autopeft.search.objective import StopTrial
from autopeft.search.plan import Plan, continuation_seconds
from autopeft.search.summary import scales_of

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

FIRST_MEMBER_GRACE = 0.1  # of the whole budget: how far past it the first member may end
CARRIED = (CANDIDATE, "label", "trainable_params", "total_params", "trainable_fraction",
           "trained_params", "stored_params", PREDICTED_MEMORY, "memory_method")


def _search_front(study: Study) -> list[Record]:
    """The front among search-fidelity records (complete, else provisional), and the
    members within the rung noise of the best search score that it leaves out: two recipes
    tied at chance after a short trial, one of them with fewer parameters, would otherwise
    drop the other from the refit (``leaders_first``)."""
    recs = [r for r in records(study.get_trials(deepcopy=False)) if r.fidelity != "refit"
            and r.superseded_by is None]
    members = front(recs)
    scored = [r for r in recs if r.score is not None]
    if scored:
        best = max(r.score for r in scored)
        members += [r for r in scored if r.score >= best - _noise(study) and r not in members]
    return members


def front_numbers(study: Study) -> set[int]:
    """The search trials the refit may continue (``_search_front``): only their
    checkpoints are kept once they complete (``search/continuation.py``)."""
    return {m.number for m in _search_front(study)}


def _noise(study: Study) -> float:
    return float((study.user_attrs.get("noise") or {}).get("rung", 0.0))


def by_promise(members: list[Record], study: Study) -> list[Record]:
    """Members ordered by the hypervolume each adds alone (largest first), then by score."""
    from autopeft.pareto import hypervolume
    from autopeft.search.summary import REFERENCE

    scales = scales_of(study)
    if scales is None or len(members) < 2:
        return sorted(members, key=lambda r: -r.values[0])
    points = [scales.normalise(r.values) for r in members]
    total = hypervolume(points, REFERENCE)
    alone = [total - hypervolume(points[:i] + points[i + 1:], REFERENCE) for i in range(len(points))]
    order = sorted(range(len(members)), key=lambda i: (-alone[i], -members[i].values[0]))
    return [members[i] for i in order]


def leaders_first(members: list[Record], study: Study) -> list[Record]:
    """``members`` (in promise order) with the *leaders* first: those whose search score is
    within the rung noise of the best, the warm-start recipes among them first, in their
    order. Why: where the search scores cannot tell members apart (after a short trial they
    are all near chance), the hypervolume each adds is decided by parameters and memory,
    known before training, and the refit spent its share on the smallest candidates (MiniLM/
    SST-2 at R = 3: (IA)3 0.734 against the LoRA recipe's 0.767); the recipes are the prior
    the evidence has not overturned."""
    scores = [m.score for m in members if m.score is not None]
    if not scores:
        return members
    noise = _noise(study)
    best = max(scores)
    recipes = {t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get(WARM_START)}
    leaders = sorted((m for m in members if m.score is not None and m.score >= best - noise),
                     key=lambda m: (m.number not in recipes, m.number if m.number in recipes else 0))
    return leaders + [m for m in members if m not in leaders]


def kind(member: Record) -> tuple[tuple[str, ...], int]:
    """What makes two front members distinct points for the refit: their method(s) and the
    decade of their trainable parameters (``results.size_band``)."""
    methods = tuple(m.get("name", "?") for m in member.candidate.get("methods", []))
    return methods, size_band(member.trainable_params)


def spread(members: list[Record], taken: Iterable[tuple[tuple[str, ...], int]] = ()) -> list[Record]:
    """``members`` (in promise order) reordered so that each next one differs in method or
    size band from those already chosen (``taken``: the kinds the refit already re-trained),
    then the rest in their order: the refit's share buys distinct points of the front before
    it re-trains variants of one (BitFit at three learning rates, tied within the noise)."""
    seen = set(taken)
    first, rest = [], []
    for m in members:
        (rest if kind(m) in seen else first).append(m)
        seen.add(kind(m))
    return first + rest


def refit_front(study: Study, bench: Trainer, plan: Plan, seeds: int, budget: Phase,
                reporter: Reporter, checkpoints: Checkpoints | None = None) -> int:
    """Refit the search front's members (see the module docstring) until ``budget`` (the
    whole budget: the refit has its last share) ends; returns how many. With
    ``checkpoints``, the run with the candidate's own seed continues its search trial."""
    done: set[int] = {r.refit_of for r in records(study.get_trials(deepcopy=False))
                      if r.refit_of is not None}
    refitted = 0
    left_out: list[int] = []  # members the time left could not re-train: said once, at the end
    while True:
        taken = [kind(r) for r in records(study.get_trials(deepcopy=False)) if r.refit_of is not None]
        todo = spread(leaders_first([m for m in by_promise(_search_front(study), study)
                                     if m.number not in done], study), taken)
        if not todo or budget.left() == 0:
            break
        member = todo[0]
        done.add(member.number)
        runs = _runs(member, bench, plan, seeds,
                     budget if taken else budget.stretched(FIRST_MEMBER_GRACE), reporter,
                     checkpoints, left_out)
        if runs:
            trial = next(t for t in study.get_trials(deepcopy=False) if t.number == member.number)
            added = record(_add_refit(study, trial, member, runs, plan.refit_steps))
            refitted += 1
            reporter.note(f"refit of trial {member.number} ({member.label}) at {plan.refit_steps} "
                          f"steps, {len(runs)} seed(s): {added.score_mean:.4f} ± "
                          f"{added.score_std:.4f} (search {member.score:.4f})")
    if left_out:
        shown = ", ".join(map(str, left_out[:8])) + (f" and {len(left_out) - 8} more"
                                                       if len(left_out) > 8 else "")
        reporter.note(f"budget reached: the refit left trial{'s' if len(left_out) > 1 else ''} "
                      f"{shown} at their search fidelity")
    if refitted:
        rho = rank_correlation(records(study.get_trials(deepcopy=False)))
        study.set_user_attr("refit_rank_correlation", rho)
        if rho is not None:
            reporter.note(f"rank correlation of search and refit scores (Spearman): {rho:.2f}")
    return refitted


def _runs(member: Record, bench: Trainer, plan: Plan, seeds: int, budget: Phase,
          reporter: Reporter, checkpoints: Checkpoints | None = None,
          left_out: list[int] | None = None) -> list[dict[str, Any]]:
    """The member's runs at the refit's length: its own seed continues the search trial's
    checkpoint (the trial is the exact start of this run), ``seeds`` more train from 0. A
    member whose first run does not fit the time left goes to ``left_out``."""
    base = Candidate.from_dict(member.candidate)
    runs = []
    if member.fidelity == "search" and member.steps == plan.refit_steps:
        runs.append({"seed": base.seed, "score": member.score,
                     "peak_memory_bytes": member.peak_memory_bytes,
                     "wall_seconds": member.wall_seconds or 0.0, "steps_trained": 0,
                     "continued_from": plan.refit_steps})  # already trained this long
    for k in range(len(runs), seeds + 1):
        resume, start = None, 0
        if k == 0 and checkpoints is not None:
            found = checkpoints.find(base, int(plan.schedule_steps or plan.refit_steps),
                                     plan.refit_steps)
            if found is None:
                reporter.note(f"no checkpoint of trial {member.number} on this machine: its "
                              "refit trains from step 0")
            else:
                resume, start = found.path, found.step
        if not budget.fits(continuation_seconds(
                member.wall_seconds or 0.0, member.scoring_seconds or 0.0,
                member.steps_trained or member.steps or 1, plan.refit_steps - start,
                member.setup_seconds or 0.0, from_start=start == 0)):
            if not runs and left_out is not None:
                left_out.append(member.number)
            break
        run = _train(bench, dataclasses.replace(base, seed=base.seed + k), plan, budget, resume)
        if run is None:
            break
        runs.append(run)
    return runs


def _add_refit(study: Study, original: Any, member: Record, runs: list[dict[str, Any]],
               steps: int) -> Any:
    import optuna

    scores = [r["score"] for r in runs]
    memory = [r["peak_memory_bytes"] or 0 for r in runs]
    mean = statistics.fmean(scores)
    attrs = {k: original.user_attrs[k] for k in CARRIED if k in original.user_attrs}
    attrs[CONFIRM_OF] = original.number
    attrs.update(confirm_scores=scores,
                 confirm_seeds=[r["seed"] for r in runs], confirm_mean=mean,
                 confirm_std=statistics.stdev(scores) if len(scores) > 1 else 0.0,
                 peak_memory_bytes=int(statistics.fmean(memory)), refit_steps=steps,
                 search_score=member.score, search_fidelity=member.fidelity,
                 wall_seconds=round(statistics.fmean(r["wall_seconds"] for r in runs), 3))
    attrs.update({STEPS: steps, STEPS_TRAINED: sum(r["steps_trained"] for r in runs),
                  CONTINUED_FROM: runs[0]["continued_from"]})
    constraints = {k: v for k, v in original.system_attrs.items() if k.startswith("constraints")}
    trial = optuna.trial.create_trial(
        params=original.params, distributions=original.distributions,
        values=[mean, float(member.trainable_params or 0), statistics.fmean(memory)],
        user_attrs=attrs, system_attrs=constraints)
    study.add_trial(trial)
    return trial


def _train(bench: Trainer, candidate: Candidate, plan: Plan, budget: Phase,
           resume: str | None = None) -> dict[str, Any] | None:
    """One run at the refit's fidelity (``resume``: from that checkpoint); None if the
    budget ended during it (or it failed)."""
    def on_step(step: int, total: int, loss: float) -> None:
        if budget.left() == 0:
            raise StopTrial("budget ended", 0, step, by_budget=True)

    fidelity = Fidelity(schedule_steps=plan.schedule_steps, stop_at=plan.refit_steps)
    try:
        outcome = bench.run(candidate, on_step=on_step, fidelity=fidelity, resume=resume)
    except StopTrial:
        return None
    except Exception:  # a seed that diverges is not a refit run; the others still count
        return None
    r = outcome.result
    return {"seed": candidate.seed, "score": r.score, "peak_memory_bytes": r.peak_memory,
            "wall_seconds": r.seconds, "steps_trained": r.steps - r.resumed_from,
            "continued_from": r.resumed_from}
