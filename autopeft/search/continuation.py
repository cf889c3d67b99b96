"""Where a trial continues from: the study's checkpoints, one per candidate (with its seed)
and learning-rate schedule, each the latest rung its run passed (``autopeft/checkpoint.py``).

The search decides here whether a run continues: a trial whose candidate has a checkpoint
(a trial the budget stopped, one interrupted, one whose worker died and that Optuna
retries) goes on from it instead of step 0; the refit continues the search trial of the
candidate's own seed up to the refit's length. A missing or unreadable checkpoint (another
machine, deleted) means step 0, said in a note. A resumed search queues the trials the
budget or an interrupt cut short first (``requeue_cut_short``), so they go on.

The life cycle: a checkpoint stays only while something can read it. Those of trials
stopped for good (the loss check) or failed are deleted at once (``TrialRunner``); a
trial's rung checkpoint is replaced by its next one (one file per run); a paused trial's
stays for its promotion, whose continuation replaces it; those of trials cut short by the
budget or an interrupt stay for a resumed search. A complete trial's is read only by the
refit's continuation of a front member: where the plan has none, the run keeps no
checkpoint at its end and its last rung's is deleted when it completes; where it has one,
a complete trial's is deleted as soon as it leaves the refit's front (``drop_superseded``),
and every complete trial's when the search and its refit end (``drop_finished``).

The disk cap (``--checkpoint-space``, ``Checkpoints.space``): the study's checkpoint
folder never holds more (``checkpoint.save`` writes only what fits). Before a run writes,
the search makes room (``make_room``), dropping first what nothing of this search reads
(files of no live trial: another plan's schedule, a trial stopped for good), then paused
trials furthest from promotion (the lowest rung first: the fewest steps lost and the
longest odds, as more trials must reach a higher rung for it to rank; within a rung the
lowest score), then trials cut short (the fewest steps first), then front members the
refit would continue (the lowest score first: its refit trains from step 0). Never a
running or queued trial's, nor the one being written. A paused trial whose checkpoint is
dropped is never promoted; the study records why (``results.CHECKPOINT_DROPPED``) and
``show`` says it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.candidate import Candidate
from autopeft.checkpoint import Checkpoint, held, load, settings_dict
from autopeft.errors import UserError
from autopeft.results import (CANDIDATE, CHECKPOINT_DROPPED, CONFIRM_OF, CONTINUES, FAIL_REASON,
                              INTERRUPTED, PAUSED, PROMOTES, RUNG_SCORES, STOPPED_BY_BUDGET,
                              WARM_START)
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
    space: int | None = None  # bytes the folder may hold (``--checkpoint-space``; None: no cap)
    space_source: str = ""  # how ``space`` was chosen, for the line that states it

    def describe(self) -> str:
        """What the study's checkpoints hold, in one line (after the plan, at the end)."""
        return held_line(self.folder, self.space, self.space_source)

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


def drop_superseded(study: Study, checkpoints: Checkpoints, schedule_steps: int,
                    kept: Collection[int] = ()) -> tuple[int, int]:
    """Delete the checkpoints of the study's complete search trials but those in ``kept``
    (the refit's front, which it continues); (files, bytes) deleted. A trial cut short or
    paused keeps its checkpoint: a resumed search or a promotion continues it."""
    files = size = 0
    for t in study.get_trials(deepcopy=False):
        if (t.state.name != "COMPLETE" or CANDIDATE not in t.user_attrs
                or CONFIRM_OF in t.user_attrs or t.number in kept):
            continue
        path = checkpoints.path(Candidate.from_dict(t.user_attrs[CANDIDATE]), schedule_steps)
        with contextlib.suppress(OSError):
            gone = os.path.getsize(path)
            os.unlink(path)
            files, size = files + 1, size + gone
    return files, size


def drop_finished(study: Study, checkpoints: Checkpoints, schedule_steps: int) -> tuple[int, int]:
    """Delete the checkpoints that nothing will read once a search has ended (its refit
    done or not planned): those of its complete trials; (files, bytes) deleted. Why: the
    README's 10-minute MiniLM search (no refit) left 559 MB in 10 files, two full
    fine-tunings at 270 MB each."""
    return drop_superseded(study, checkpoints, schedule_steps)


DEFAULT_SPACE_SHARE = 0.5  # of the free disk under the studies folder (see ``checkpoint_space``)


def checkpoint_space(text: str | float | None, folder: str) -> tuple[int, str]:
    """(bytes, how they were chosen) the checkpoint ``folder`` may hold: ``20GB``, ``500MiB``
    (``constraints.parse_size``), or a share of the free disk where the folder is (``0.3``,
    ``30%``) plus what the folder already holds. Default ``DEFAULT_SPACE_SHARE``: half of
    what is free, so a search never takes the disk's last room from the machine's other
    users, the model and data caches and the study's own database, and half of a typical
    100 GB free holds some thirty full fine-tunings of a base-size model (1.5 GB each)."""
    from autopeft.search.constraints import parse_size

    share = _share(text)
    if share is None:
        try:
            return parse_size(text), f"--checkpoint-space {text}"
        except UserError:
            raise UserError(f"cannot read --checkpoint-space {text!r}; use a size (20GB, "
                            "500MiB) or a share of the free disk (0.3, 30%)") from None
    where = folder
    while not os.path.isdir(where):  # the nearest folder that exists: the same disk
        where = os.path.dirname(os.path.abspath(where))
    free = shutil.disk_usage(where).free
    return int(share * free) + held(folder), f"{share:.0%} of the {_gib(free)} free"


def _share(text: str | float | None) -> float | None:
    """The share of the free disk ``text`` asks for (None: it is a size)."""
    if text is None:
        return DEFAULT_SPACE_SHARE
    value = str(text).strip()
    percent = value.endswith("%")
    try:
        share = float(value[:-1] if percent else value) / (100 if percent else 1)
    except ValueError:
        return None  # 20GB, 500MiB
    if not percent and share > 1:
        return None  # a bare number of bytes
    if not 0 < share <= 1:
        raise UserError(f"--checkpoint-space {text!r}: a share of the free disk is above 0 "
                        "and at most 1 (100%)")
    return share


def _gib(size: float) -> str:
    """A size for a line: 1.5 GiB, 270 MiB, 36 KiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if unit == "GiB" else f"{size / scale:.0f} {unit}"
    return f"{int(size)} B"


def held_line(folder: str, space: int | None = None, source: str = "") -> str:
    """What a checkpoint folder holds on this machine, in one line (the search, ``show``)."""
    files = [f for f in os.listdir(folder) if f.endswith(".pt")] if os.path.isdir(folder) else []
    cap = (f" of at most {_gib(space)}" + (f" ({source})" if source else "")
           if space is not None else "")
    return (f"checkpoints hold {_gib(held(folder))}{cap} in {len(files)} "
            f"file{'s' if len(files) != 1 else ''} under {folder}")


def make_room(study: Study, checkpoints: Checkpoints, schedule_steps: int, need: int,
              writing: str) -> list[str]:
    """Delete checkpoints, in the order of the module docstring, until ``need`` more bytes
    fit under ``checkpoints.space`` beside the others (``writing``: the file about to be
    replaced, not counted and never dropped); returns what was dropped, one line each.
    Why the search and not the writer decides: only the study knows which trial a file
    belongs to and how close it is to promotion."""
    space, folder = checkpoints.space, checkpoints.folder
    if space is None or not os.path.isdir(folder):
        return []
    mine = os.path.getsize(writing) if os.path.isfile(writing) else 0
    over = held(folder) - mine + need - space
    if over <= 0:
        return []
    dropped = []
    for path, number, why in _victims(study, checkpoints, schedule_steps, writing):
        with contextlib.suppress(OSError):
            gone = os.path.getsize(path)
            os.unlink(path)
            over -= gone
            reason = (f"deleted to stay under --checkpoint-space ({_gib(space)}): {why}"
                      + ("; it can no longer be promoted" if why.startswith("paused") else ""))
            if number is not None:
                study.set_user_attr(f"{CHECKPOINT_DROPPED}:{number}", reason)
            dropped.append(f"trial {number}: {reason}" if number is not None else reason)
        if over <= 0:
            break
    return dropped


def _victims(study: Study, checkpoints: Checkpoints, schedule_steps: int,
             writing: str) -> list[tuple[str, int | None, str]]:
    """The files ``make_room`` may drop, first to last: (path, trial number, what it was)."""
    trials = study.get_trials(deepcopy=False)
    owner: dict[str, Any] = {}  # path -> the last trial that took its candidate up
    for t in trials:
        if CANDIDATE in t.user_attrs and CONFIRM_OF not in t.user_attrs:
            owner[checkpoints.path(Candidate.from_dict(t.user_attrs[CANDIDATE]),
                                   schedule_steps)] = t
    waiting = {t.user_attrs.get(k) for t in trials if t.state.name in ("WAITING", "RUNNING")
               for k in (CONTINUES, PROMOTES)}  # queued to continue: their files are read next
    ranked = []
    for name in os.listdir(checkpoints.folder):
        path = os.path.join(checkpoints.folder, name)
        if not name.endswith(".pt") or name.startswith(".tmp-") or path == writing:
            continue
        t = owner.get(path)
        if t is None:  # another plan's schedule, another origin: nothing here reads it
            ranked.append(((0, 0.0, 0.0, -1), path, None, "no trial of this search reads it"))
        elif t.number not in waiting and (rank := _rank(t)) is not None:
            ranked.append((rank, path, t.number, _what(t, rank[0])))
    return [(path, number, why) for _, path, number, why in sorted(ranked)]


def _rank(t: Any) -> tuple[int, float, float, int] | None:
    """Where a finished trial's checkpoint comes in the drop order (None: never dropped)."""
    a, state = t.user_attrs, t.state.name
    if state in ("RUNNING", "WAITING"):
        return None
    if state == "PRUNED" and a.get(PAUSED):
        step = int(a.get("pruned_at_step") or 0)
        return 1, step, float((a.get(RUNG_SCORES) or {}).get(str(step), 0.0)), t.number
    if (state == "PRUNED" and a.get(STOPPED_BY_BUDGET)) or (
            state == "FAIL" and a.get(FAIL_REASON) == INTERRUPTED):
        return 2, float(a.get("steps") or 0), 0.0, t.number
    if state == "COMPLETE":
        return 3, float(t.values[0]) if t.values else 0.0, 0.0, t.number
    return 0, 0.0, 0.0, t.number  # stopped for good or failed: nothing continues it


def _what(t: Any, group: int) -> str:
    return ["stopped for good", f"paused at step {t.user_attrs.get('pruned_at_step')}",
            "cut short", "complete (its refit trains from step 0)"][group]


def study_checkpoints(study: Study, folder: str, settings: TrainSettings,
                      space: str | float | None = None) -> Checkpoints:
    """The checkpoints of ``study`` in ``folder`` (``paths.checkpoints_dir``), under the cap
    ``space`` asks for (``checkpoint_space``), on this machine."""
    size, source = checkpoint_space(space, folder)
    return Checkpoints(folder, settings, origin_of(study), size, source)


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
