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

from autopeft.results import OVER_CAP
from autopeft.search.workers import beyond_cap, cap_reached, seconds_left, start_workers

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
    # Inside a worker its one GPU is `cuda`, whatever device the study names (cuda:1 ...).
    assert all(cmd[-2:] == ["--device", "cuda"] for cmd, _ in launched)


@pytest.mark.parametrize("inherited", [
    "4,5,6,7",  # a SLURM job's GPUs
    "GPU-8c1a2b3c-0000-1111-2222-333344445555,GPU-9d2b,GPU-ae3c,GPU-bf4d",  # UUIDs
    "MIG-1f2e3d4c-aaaa-bbbb-cccc-ddddeeeeffff,MIG-2a,MIG-3b,MIG-4c",  # MIG instances
])
def test_workers_get_gpus_from_the_inherited_list(inherited: str, launched: Launched,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
    entries = inherited.split(",")
    start_workers(3, "s", "sqlite:////tmp/s.db", "none", 60)
    # The search keeps the first; never an index outside the job's list.
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in launched] == entries[1:]


def test_the_inherited_list_is_read_as_cuda_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.devices import visible_devices

    gpus(monkeypatch, 2)
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "4, 5"}) == ["4", "5"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "4,5,6"}) == ["4", "5"]  # CUDA sees 2
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "3,-1,2"}) == ["3"]  # stops at -1
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []  # every GPU hidden
    assert visible_devices({}) == ["0", "1"]


def test_workers_sharing_a_gpu_get_a_share_of_its_memory_and_of_the_threads(
        launched: Launched, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.devices import SHARE_ENV, place

    gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    slots = place(4, ["4", "5"], trials_per_gpu=2, first=1, cpus=16)
    assert [s.device for s in slots] == ["5", "4", "5", "4"]  # the search on its own device
    assert {s.share for s in slots} == {0.5} and {s.threads for s in slots} == {4}
    start_workers(3, "s", "sqlite:////tmp/s.db", "none", 60, slots[1:])
    envs = [env for _, env in launched]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "5", "4"]
    assert {e[SHARE_ENV] for e in envs} == {"0.5"} and {e["OMP_NUM_THREADS"] for e in envs} == {"4"}
    # Three GPUs, three workers: one each, the whole device, nothing shared.
    assert {(s.share, s.threads) for s in place(3, ["0", "1", "2"], 1, cpus=12)} == {(1.0, 4)}


def test_cpu_workers_divide_the_cores_instead_of_each_taking_them_all(
        launched: Launched) -> None:
    """At torch's default every process uses every core: n of them oversubscribe the cores
    n-fold. Each slot gets its share, the search's own slot too (it and its trial child)."""
    import torch

    from autopeft.devices import Slot, own_slot, place

    assert {s.threads for s in place(2, [], 1, cpus=8)} == {4}
    assert {s.threads for s in place(4, [], 1, cpus=2)} == {1}  # never 0: torch's default
    assert place(1, [], 1, cpus=8) == [Slot(None)]  # alone: torch's default, as ever
    start_workers(1, "s", "sqlite:////tmp/s.db", "none", 60, place(2, [], 1, cpus=8)[1:])
    assert launched[0][1]["OMP_NUM_THREADS"] == "4"
    threads = torch.get_num_threads()
    with own_slot(place(4, [], 1, cpus=2)[0]):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads


def test_more_workers_than_trials_per_gpu_allow_are_refused_in_one_line() -> None:
    from autopeft.devices import place
    from autopeft.errors import UserError

    with pytest.raises(UserError, match="--trials-per-gpu 2"):
        place(5, ["0", "1"], trials_per_gpu=2)
    assert len(place(5, [], trials_per_gpu=1)) == 5  # CPU: no GPU to share


def test_how_many_trials_fit_on_a_gpu() -> None:
    from autopeft.devices import MAX_AUTO_TRIALS_PER_GPU, auto_trials_per_gpu, fits

    gib = 2**30
    assert fits(10 * gib, 80 * gib, 4) == 4  # 40 GiB of 72 usable
    assert fits(30 * gib, 80 * gib, 4) == 2  # only two fit: say so
    assert fits(100 * gib, 80 * gib, 4) == 1  # never 0: one trial always runs
    assert auto_trials_per_gpu(20 * gib, 141 * gib) == 6
    assert auto_trials_per_gpu(gib, 141 * gib) == MAX_AUTO_TRIALS_PER_GPU


def test_a_joining_worker_trains_on_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.devices import worker_device

    gpus(monkeypatch, 1)  # a worker started with one GPU in CUDA_VISIBLE_DEVICES
    assert worker_device("cuda:1") == "cuda"  # the study's cuda:1 is not this process's
    assert worker_device("cuda:0") == "cuda:0" and worker_device("auto") == "auto"
    assert worker_device("cuda:1", "cpu") == "cpu"  # its own --device wins
    gpus(monkeypatch, 4)  # a worker that sees all four: the study's device as it is
    assert worker_device("cuda:1") == "cuda:1"
