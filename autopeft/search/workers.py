"""Many workers, one study: the global trial cap, the shared deadline, and starting workers.

Optuna's storage is the only coordinator (no scheduler of ours): every worker asks the
same study for trials, and reads the study's ``max_trials`` and its budget (``budget.py``).

The cap counts the trials that took a slot: every asked trial except a dead worker's
trial that was retried (the retry takes its place) and trials marked ``over_cap``. Each
worker checks before asking; two workers can still pass that check at the same moment, so
after asking, a worker whose trial number falls beyond the cap marks it ``over_cap``
(FAIL, never trained, hidden from ``show``) and stops: the cap holds exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autopeft.devices import Slot
from autopeft.search.budget import Budget, Clock
from autopeft.results import never_trained

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial, Trial
    from optuna import Study  # only for annotations: optuna stays a lazy import


def _slots(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return [t for t in trials if t.state.name != "WAITING" and not never_trained(t.user_attrs)
            and not (t.state.name == "FAIL" and t.number in retried)]


def cap_reached(study: Study, cap: int | None) -> bool:
    return cap is not None and len(_slots(study.get_trials(deepcopy=False))) >= cap


def beyond_cap(study: Study, trial: Trial, cap: int | None) -> bool:
    """Whether ``trial`` (just asked) is past the cap, counting in trial-number order."""
    if cap is None:
        return False
    ahead = [t for t in _slots(study.get_trials(deepcopy=False)) if t.number <= trial.number]
    return len(ahead) > cap


def seconds_left(study: Study, clock: Clock = time.time) -> float | None:
    """Until the study's search phase ends (``Budget.of_study``); None: no time limit."""
    return Budget.of_study(study.user_attrs, clock).search.left()


def start_workers(n: int, study: str, storage: str, isolation: str, heartbeat: int,
                  slots: Sequence[Slot] | None = None) -> list[Any]:
    """``n`` ``autopeft worker`` processes on this machine, worker ``i`` in ``slots[i]``.

    A worker on a GPU sees only its own (``CUDA_VISIBLE_DEVICES`` = its entry of the
    inherited list, ``devices.place``) and trains on ``--device cuda``, whatever device the
    study names. Default slots: the GPUs dealt round-robin, the search keeping the first."""
    if slots is None:
        from autopeft.devices import place, visible_devices

        slots = place(n + 1, visible_devices(), n + 1)[1:]
    procs = []
    for slot in slots[:n]:
        cmd = [sys.executable, "-m", "autopeft", "worker", "--study", study, "--storage", storage,
               "--isolation", isolation, "--heartbeat", str(heartbeat), "--quiet"]
        if slot.device is not None:
            cmd += ["--device", "cuda"]
        procs.append(subprocess.Popen(cmd, env=slot.env(os.environ)))
    return procs
