"""autopeft/search/workers.py: which trials take a slot of the global cap, the trial that
comes too late, the shared deadline, and the worker command line (no process is started).

Studies are Optuna's in memory, their trials added in the states under test."""
from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from autopeft.search.workers import OVER_CAP, beyond_cap, cap_reached, seconds_left, start_workers

optuna.logging.set_verbosity(optuna.logging.WARNING)


def add(study: optuna.Study, state: TrialState, **user_attrs: Any) -> FrozenTrial:
    """A trial in ``state`` (COMPLETE ones get a value); returns it as stored."""
    value = 0.5 if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, value=value, user_attrs=user_attrs))
    return study.get_trials()[-1]


def slots(study: optuna.Study) -> int:
    """How many slots the cap sees taken: the largest cap that is reached."""
    return max(cap for cap in range(len(study.get_trials()) + 1) if cap_reached(study, cap))


def test_no_cap_is_never_reached() -> None:
    study = optuna.create_study()
    for _ in range(3):
        add(study, TrialState.COMPLETE)
    assert not cap_reached(study, None)
    assert not beyond_cap(study, study.get_trials()[-1], None)


def test_every_asked_trial_takes_a_slot_whatever_its_end() -> None:
    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        add(study, state)
    assert cap_reached(study, 4) and not cap_reached(study, 5)
    assert cap_reached(study, 0)  # a cap of 0 is reached before any trial


def test_queued_and_over_cap_trials_take_no_slot() -> None:
    study = optuna.create_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.WAITING)  # a queued recipe or retry: not asked yet
    add(study, TrialState.FAIL, **{OVER_CAP: True})  # asked too late, never trained
    assert slots(study) == 1


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_dead_workers_trial_gives_its_slot_to_its_retry() -> None:
    study = optuna.create_study()
    add(study, TrialState.COMPLETE)
    dead = add(study, TrialState.FAIL)
    assert slots(study) == 2  # a failed trial counts, until it is retried
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    retry(study, dead)  # what the storage does with a trial whose heartbeats stopped
    assert study.get_trials()[-1].state == TrialState.WAITING
    assert slots(study) == 1  # the retry is queued, the dead trial gave up its slot
    trial = study.ask()  # now the retry runs: it takes the slot
    assert trial.number == 2 and slots(study) == 2


def test_a_trial_beyond_the_cap_counts_in_trial_number_order() -> None:
    study = optuna.create_study()
    add(study, TrialState.COMPLETE)  # 0
    add(study, TrialState.WAITING)  # 1: no slot
    third = add(study, TrialState.RUNNING)  # 2: the second slot
    fourth = add(study, TrialState.RUNNING)  # 3: a later trial does not push 2 out
    assert not beyond_cap(study, third, 2) and beyond_cap(study, fourth, 2)
    assert beyond_cap(study, third, 1)


def test_two_workers_racing_for_the_last_slot_keep_the_cap_exact() -> None:
    study = optuna.create_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE)
    cap = 3
    assert not cap_reached(study, cap)  # both workers pass the check at the same moment ...
    first, second = study.ask(), study.ask()  # ... and both ask
    assert not beyond_cap(study, first, cap)
    assert beyond_cap(study, second, cap)  # the later one gives its trial back
    second.set_user_attr(OVER_CAP, True)
    study.tell(second, state=TrialState.FAIL)
    assert not beyond_cap(study, first, cap)  # and the earlier one keeps its slot
    study.tell(first, 0.5)
    assert cap_reached(study, cap) and slots(study) == cap


def test_seconds_left_come_from_the_studys_deadline() -> None:
    study = optuna.create_study()
    assert seconds_left(study) is None  # no deadline: a search without a time budget
    study.set_user_attr("deadline", None)  # what the search stores for no budget
    assert seconds_left(study) is None
    study.set_user_attr("deadline", 1060.0)
    assert seconds_left(study, clock=lambda: 1000.0) == 60.0
    assert seconds_left(study, clock=lambda: 1065.0) == 0.0  # past: never negative


Launched = list[tuple[list[str], dict[str, str]]]


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> Launched:
    """The command lines and environments ``start_workers`` would start."""
    started: Launched = []

    def popen(cmd: list[str], env: dict[str, str]) -> str:
        started.append((cmd, env))
        return f"process {len(started)}"

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return started


def gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """A stand-in torch with ``n`` CUDA devices (the real one is not imported)."""
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: n))
    monkeypatch.setitem(sys.modules, "torch", fake)


def test_workers_rejoin_the_same_study_with_its_settings(launched: Launched,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 0)
    url = "sqlite:////tmp/x/studies/s.db"
    assert start_workers(2, "s", url, "process", 7) == ["process 1", "process 2"]
    assert [cmd for cmd, _ in launched] == [
        [sys.executable, "-m", "autopeft", "worker", "--study", "s", "--storage", url,
         "--isolation", "process", "--heartbeat", "7", "--quiet"]] * 2
    assert all("CUDA_VISIBLE_DEVICES" not in env for _, env in launched)  # CPU: nothing to share
    assert start_workers(0, "s", url, "none", 7) == [] and len(launched) == 2


def test_with_gpus_each_worker_gets_one_and_the_search_keeps_device_0(
        launched: Launched, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    start_workers(3, "s", "sqlite:////tmp/s.db", "none", 60)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in launched] == ["1", "0", "1"]
