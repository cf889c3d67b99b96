"""The search loop: ask -> sample -> train -> tell until the trial count, the study's cap or
the search phase's deadline ends it. One trial's own course is ``objective.py``."""
from __future__ import annotations

import gc
import os
import socket
import warnings
from typing import TYPE_CHECKING

from autopeft.protocols import Reporter
from autopeft.results import CANDIDATE, INPUT_TOKENS, OVER_CAP
from autopeft.search.budget import Phase
from autopeft.search.objective import TrialRunner
from autopeft.search.storage import (WORKER, WORKER_PROCESS, fail_stale_trials, heartbeat,
                                     interrupts_held, process_record)
from autopeft.search.summary import record_hypervolume
from autopeft.search.workers import beyond_cap, cap_reached
from autopeft.space import Space

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


# Sampled candidates in a row predicted not to fit in the time left (``not_started``) after
# which the search phase ends. Why go on after one: the next draw may be cheaper (a random
# draw of prompt tuning took four times a LoRA trial's time on SST-2), and what the search
# phase leaves goes to the refit, which continues only a few members. Why 3: a refusal costs
# one proposal (0.109 s of CPU at 450 trials, BENCHMARKS "The engine at a user's scale"),
# and three in a row say the sampler wants what no longer fits. Chosen, not measured.
MAX_REFUSED = 3


def worker_name() -> str:
    """Which process ran a trial, for people: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_trials(study: Study, n_trials: int | None, max_trials: int | None, space: Space,
               runner: TrialRunner, budget: Phase, reporter: Reporter) -> None:
    """Ask, sample, train, tell: until ``n_trials`` ran here, the study holds ``max_trials``
    (all workers), or the next trial would not fit in the budget."""
    from optuna.trial import TrialState

    ran = refused = 0
    while n_trials is None or ran < n_trials:
        fail_stale_trials(study)  # a dead worker's trial: FAIL, and retried once
        if cap_reached(study, max_trials):
            reporter.note(f"the study holds its {max_trials} trials")
            break
        if not budget.fits(runner.time_needed()):
            reporter.note("budget reached: no further trial fits in the time left")
            break
        if runner.pruner.prunes:
            runner.promote()  # a paused trial that now ranks goes before a new candidate
        # A Ctrl-C while the trial is created waits until ``heartbeat`` can record it.
        with interrupts_held() as held, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")  # we beat below
            trial = study.ask()
            over = beyond_cap(study, trial, max_trials)
            if over:  # another worker took the last slot
                trial.set_user_attr(OVER_CAP, True)
                study.tell(trial, state=TrialState.FAIL)
        if over:
            held.deliver()
            break
        # Beat, and say who runs it, at once: a search on this machine that finds this
        # process gone fails the trial and retries it without waiting (storage.py). An
        # error (e.g. a choice the study never had) leaves nothing RUNNING: it fails.
        with heartbeat(study, trial):
            held.deliver()  # a Ctrl-C held above: this trial is recorded as interrupted
            trial.set_user_attr(WORKER, worker_name())
            trial.set_user_attr(WORKER_PROCESS, process_record(trial.number))
            candidate = space.sample(trial)
            trial.set_user_attr(CANDIDATE, candidate.to_dict())
            trial.set_user_attr("label", candidate.label)
            if candidate.input_tokens:  # its steps are dearer (``budget.predict_seconds``)
                trial.set_user_attr(INPUT_TOKENS, candidate.input_tokens)
            refused = refused + 1 if runner.not_started(trial, candidate) else 0
            if refused:  # predicted not to fit (said): another, cheaper candidate may
                if refused == MAX_REFUSED:
                    reporter.note(f"budget reached: {MAX_REFUSED} candidates in a row were "
                                  "predicted not to fit in the time left")
                    break
                continue
            reporter.trial_started(trial.number, candidate)
            runner.run(trial, candidate)
        runner.check_separation()  # a first rung that ranks noise: fewer, longer trials
        record_hypervolume(study)
        gc.collect()
        ran += 1
