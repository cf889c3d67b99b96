"""Where a trial continues from: the study's checkpoints, one per candidate (with its seed)
and learning-rate schedule, each the latest rung its run passed (``autopeft/checkpoint.py``).

The search decides here whether a run continues: a trial whose candidate has a checkpoint
(a trial the budget stopped, one interrupted, one whose worker died and that Optuna
retries) goes on from it instead of step 0; the refit continues the search trial of the
candidate's own seed up to the refit's length. A missing or unreadable checkpoint (another
machine, deleted) means step 0, said in a note. A resumed search queues the trials the
budget or an interrupt cut short first (``requeue_cut_short``), so they go on.

Checkpoints of trials pruned at a rung or failed cannot usefully continue and are deleted
(``TrialRunner``); those of complete trials stay until the search and its refit (their
only reader) end (``drop_finished``), and those of trials stopped by the budget or an
interrupt stay for a resumed search.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.candidate import Candidate
from autopeft.checkpoint import Checkpoint, load, settings_dict
from autopeft.results import (CANDIDATE, CONFIRM_OF, CONTINUES, FAIL_REASON, INTERRUPTED,
                              STOPPED_BY_BUDGET, WARM_START)
from autopeft.settings import TrainSettings

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


@dataclass(frozen=True)
class Found:
    path: str
    step: int
    rung_scores: dict[int, float]


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one study (``paths.checkpoints_dir``) for its training settings."""

    folder: str
    settings: TrainSettings
    origin: str = ""  # what the runs train on (``origin_of``): a study name used again for
    # another model or data (its database deleted, or another storage) finds none of these

    def path(self, candidate: Candidate, schedule_steps: int) -> str:
        key = json.dumps({"candidate": candidate.to_dict(), "schedule_steps": schedule_steps,
                          "origin": self.origin}, sort_keys=True)
        return os.path.join(self.folder, hashlib.sha256(key.encode()).hexdigest()[:24] + ".pt")

    def find(self, candidate: Candidate, schedule_steps: int, up_to: int) -> Found | None:
        """The checkpoint a run of ``candidate`` to step ``up_to`` can continue from, or None
        (none, unreadable, of other settings, or past ``up_to``)."""
        path = self.path(candidate, schedule_steps)
        if not os.path.isfile(path):
            return None
        try:
            ckpt: Checkpoint = load(path, lazy=True)  # its tensors stay on disk
        except (OSError, ValueError):
            return None
        if ckpt.step > up_to or ckpt.mismatch(candidate.to_dict(), settings_dict(self.settings),
                                              schedule_steps):
            return None
        return Found(path, ckpt.step, dict(ckpt.rung_scores))

    def discard(self, candidate: Candidate, schedule_steps: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path(candidate, schedule_steps))


def drop_finished(study: Study, checkpoints: Checkpoints, schedule_steps: int) -> tuple[int, int]:
    """Delete the checkpoints that nothing will read once a search has ended (its refit
    done or not planned): those of its complete trials; (files, bytes) deleted. A trial cut
    short (the budget, an interrupt) keeps its checkpoint: a resumed search continues it.
    Why: a complete trial's checkpoint is read only by the refit, and the README's 10-minute
    MiniLM search (no refit) left 559 MB in 10 files, two full fine-tunings at 270 MB each."""
    files = size = 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or CANDIDATE not in t.user_attrs or CONFIRM_OF in t.user_attrs:
            continue
        path = checkpoints.path(Candidate.from_dict(t.user_attrs[CANDIDATE]), schedule_steps)
        with contextlib.suppress(OSError):
            held = os.path.getsize(path)
            os.unlink(path)
            files, size = files + 1, size + held
    return files, size


def origin_of(study: Study) -> str:
    """The task, model and data a study's runs train on (as every process of the study
    reads them from its attributes), as one key for ``Checkpoints``."""
    attrs = study.user_attrs
    return json.dumps({k: attrs.get(k) for k in ("task", "model", "data")}, sort_keys=True,
                      default=str)


def requeue_cut_short(study: Study, checkpoints: Checkpoints, schedule_steps: int,
                      trial_steps: int) -> list[int]:
    """Queue again each trial the budget stopped or an interrupt ended (not a warm-start
    recipe: ``warmstart.requeue_interrupted`` queues those) whose run has a checkpoint here
    and whose candidate no later trial took up; returns their numbers. Call when a search
    resumes: the queued trial samples the same candidate and continues its checkpoint."""
    trials = study.get_trials(deepcopy=False)
    taken: dict[str, int] = {}  # candidate -> the last trial that took it up
    for t in trials:
        if CANDIDATE in t.user_attrs and CONFIRM_OF not in t.user_attrs:
            taken[repr(t.user_attrs[CANDIDATE])] = t.number
    queued = {t.user_attrs.get(CONTINUES) for t in trials if t.state.name == "WAITING"}
    numbers = []
    for t in trials:
        a = t.user_attrs
        cut = (t.state.name == "PRUNED" and a.get(STOPPED_BY_BUDGET)) or (
            t.state.name == "FAIL" and a.get(FAIL_REASON) == INTERRUPTED)
        if (not cut or WARM_START in a or t.number in queued
                or taken.get(repr(a.get(CANDIDATE))) != t.number):
            continue
        found = checkpoints.find(Candidate.from_dict(a[CANDIDATE]), schedule_steps, trial_steps)
        if found is None or found.step == 0:
            continue
        study.enqueue_trial(dict(t.params), user_attrs={CONTINUES: t.number},
                            skip_if_exists=False)
        numbers.append(t.number)
    return numbers
