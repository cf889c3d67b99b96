"""``--confirm-seeds K``: re-train every Pareto member with K more seeds at full fidelity.

A single seed flatters some candidates. Each front member is trained again with seeds
``seed+1 .. seed+K``; the result is added to the study as a *confirmation trial*: same
parameters and candidate, values = the means over all K+1 runs, user attributes
``confirm_of`` (the original trial), ``confirm_scores``, ``confirm_seeds``, ``confirm_mean``
and ``confirm_std`` (sample standard deviation of the score). Finished Optuna trials cannot
be changed, so the original stays as it was and is superseded: the front (``show``, the
hypervolume) uses the confirmation instead. When confirmation moves the front, new members
are confirmed too, until all are or the budget ends (a member cut short keeps the seeds it
finished).
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from autopeft.candidate import Candidate
from autopeft.search.budget import Budget
from autopeft.search.objective import StopTrial
from autopeft.search.summary import front_trials

CARRIED = ("candidate", "label", "trainable_params", "total_params", "trainable_fraction",
           "predicted_memory_bytes", "memory_method")


def _unconfirmed(study: Any, tried: set[int]) -> list[Any]:
    return [t for t in front_trials(study)
            if "confirm_of" not in t.user_attrs and t.number not in tried]


def _add_confirmation(study: Any, original: Any, runs: list[dict[str, Any]]) -> Any:
    import optuna

    scores = [r["score"] for r in runs]
    memory = [r["peak_memory_bytes"] for r in runs]
    mean = statistics.fmean(scores)
    attrs = {k: original.user_attrs[k] for k in CARRIED if k in original.user_attrs}
    attrs.update(confirm_of=original.number, confirm_scores=scores,
                 confirm_seeds=[r["seed"] for r in runs], confirm_mean=mean,
                 confirm_std=statistics.stdev(scores) if len(scores) > 1 else 0.0,
                 peak_memory_bytes=int(statistics.fmean(memory)),
                 wall_seconds=round(statistics.fmean(r["wall_seconds"] for r in runs), 3),
                 steps=original.user_attrs.get("steps"))
    constraints = {k: v for k, v in original.system_attrs.items() if k.startswith("constraints")}
    trial = optuna.trial.create_trial(
        params=original.params, distributions=original.distributions,
        values=[mean, original.values[1], statistics.fmean(memory)],
        user_attrs=attrs, system_attrs=constraints)
    study.add_trial(trial)
    return trial


def confirm_front(study: Any, bench: Any, seeds: int, budget: Budget, reporter: Any) -> int:
    """Confirm the front's members; returns how many were confirmed."""
    tried: set[int] = set()
    confirmed = 0
    while todo := _unconfirmed(study, tried):
        original = max(todo, key=lambda t: t.values[0])
        tried.add(original.number)
        base = Candidate.from_dict(original.user_attrs["candidate"])
        runs = [{"seed": base.seed, "score": original.values[0],
                 "peak_memory_bytes": original.values[2],
                 "wall_seconds": original.user_attrs.get("wall_seconds", 0.0)}]
        for k in range(1, seeds + 1):
            if not budget.fits(original.user_attrs.get("wall_seconds")):
                reporter.note(f"budget reached while confirming trial {original.number}")
                break
            run = _train_seed(bench, dataclasses.replace(base, seed=base.seed + k), budget)
            if run is None:
                break
            runs.append(run)
        if len(runs) > 1:
            added = _add_confirmation(study, original, runs)
            confirmed += 1
            a = added.user_attrs
            reporter.note(f"trial {original.number} confirmed with {len(runs)} seeds: score "
                          f"{a['confirm_mean']:.4f} ± {a['confirm_std']:.4f}")
        if budget.left() == 0:
            break
    return confirmed


def _train_seed(bench: Any, candidate: Candidate, budget: Budget) -> dict[str, Any] | None:
    """One full-fidelity run; None if the budget ended during it (or it failed)."""
    def on_step(step: int, total: int, loss: float) -> None:
        if budget.left() == 0:
            raise StopTrial("budget ended", 0, step, by_budget=True)

    try:
        outcome = bench.run(candidate, on_step=on_step)
    except StopTrial:
        return None
    except Exception:  # a seed that diverges is not a confirmation; the others still count
        return None
    r = outcome.result
    return {"seed": candidate.seed, "score": r.score, "peak_memory_bytes": r.peak_memory,
            "wall_seconds": r.seconds}
