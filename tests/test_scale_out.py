"""Many workers on one study: PostgreSQL (a real server) and a journal file.

The PostgreSQL URL comes from ``AUTOPEFT_TEST_POSTGRES`` (``.ci/run`` starts a server and
sets it). Unset, the PostgreSQL tests skip with the reason; set but unreachable, they fail."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from autopeft.cli import main

pytestmark = pytest.mark.slow
LOCAL_PG = "postgresql://autopeft:autopeft@localhost:5432/autopeft_test"


@pytest.fixture(scope="module")
def pg_url() -> str:
    """The server named by ``AUTOPEFT_TEST_POSTGRES``: skipped when it is not set, failed
    when it is set and cannot be reached (a broken server is not a reason to skip)."""
    url = os.environ.get("AUTOPEFT_TEST_POSTGRES")
    if not url:
        pytest.skip("AUTOPEFT_TEST_POSTGRES is not set; .ci/run starts a server and sets it "
                    f"(e.g. {LOCAL_PG})")
    from autopeft.search.storage import open_storage

    try:
        open_storage(url, create=True)
    except Exception as exc:  # whatever went wrong, it must be seen
        pytest.fail(f"AUTOPEFT_TEST_POSTGRES={url} is set but cannot be opened: {exc}")
    return url


def sleepy_space(folder: Path, barrier: int = 0) -> Path:
    path = folder / "sleepy.yaml"  # each step sleeps: trials overlap across workers
    # A learning-rate range: each trial is a new candidate (an identical one is not re-trained).
    path.write_text("candidates: [fault]\nlearning_rate: {low: 1.0e-4, high: 1.0e-3}\n"
                    f"methods:\n  fault: {{kind: sleep, seconds: 0.3, barrier: {barrier}}}\n")
    return path


def search(storage: str, study: str, folder: Path, model: Path, data: Path, *extra: str,
           barrier: int = 0) -> list[str]:
    return ["search", "--task", "sst2", "--model", str(model), "--data-dir", str(data),
            "--storage", storage, "--study", study, "--space", str(sleepy_space(folder, barrier)),
            "--batch-size", "16", "--train-samples", "64", "--eval-samples", "16",
            "--max-length", "32", "--pruner", "none", "--no-warm-start", "--quiet",
            "--isolation", "none", *extra]


@pytest.fixture(autouse=True)
def faults() -> None:
    from faults import enable_faults

    enable_faults()  # names tests/faults.py in AUTOPEFT_PLUGINS: workers register `fault` too
    yield
    os.environ.pop("AUTOPEFT_PLUGINS", None)


def check_cap(storage: str, study: str, cap: int) -> list[optuna.trial.FrozenTrial]:
    from autopeft.search.storage import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(storage, False)).trials
    counted = [t for t in trials if not t.user_attrs.get("over_cap")]
    assert [t.state.name for t in counted] == ["COMPLETE"] * cap
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # unique, no duplicates
    assert all(t.user_attrs["candidate"]["methods"] for t in counted)  # every candidate stored
    return counted


def three_workers(storage: str, folder: Path, model: Path, data: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process's first trial waits until all three have one (``faults`` barrier): the
    spawned workers take trials however long they take to start, so the test does not
    depend on them joining before the search's own trials reach the cap."""
    study = f"w-{uuid.uuid4().hex[:8]}"
    barrier = folder / "barrier"
    barrier.mkdir()
    monkeypatch.setenv("AUTOPEFT_TEST_BARRIER", str(barrier))  # the workers inherit it
    assert main(search(storage, study, folder, model, data, "--workers", "3", "--n-trials", "12",
                       barrier=3)) == 0
    done = check_cap(storage, study, 12)
    assert len(os.listdir(barrier)) == 3
    assert len({t.user_attrs["worker"] for t in done}) == 3  # all three took trials


@pytest.mark.xdist_group("postgresql")  # one database: its tables made once
def test_three_workers_on_postgresql_finish_exactly_the_cap(pg_url, workdir, tiny_model,
                                                            tiny_data, monkeypatch) -> None:
    three_workers(pg_url, workdir, tiny_model, tiny_data, monkeypatch)


def test_three_workers_on_a_journal_file(workdir, tiny_model, tiny_data, monkeypatch) -> None:
    three_workers(f"journal:{workdir / 'study.journal'}", workdir, tiny_model, tiny_data,
                  monkeypatch)


@pytest.mark.xdist_group("postgresql")  # one database: its tables made once
def test_a_killed_worker_s_trial_fails_is_retried_and_the_cap_holds(pg_url, workdir, tiny_model,
                                                                    tiny_data) -> None:
    study = f"k-{uuid.uuid4().hex[:8]}"
    base = search(pg_url, study, workdir, tiny_model, tiny_data, "--heartbeat", "1")
    assert main(base + ["--max-trials", "5", "--n-trials", "1"]) == 0  # creates it, one trial
    here = Path(__file__).parent  # the tests' folder (faults.py) and the tree under test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]))
    # As a terminal's foreground job would: SIGINT raises KeyboardInterrupt (a background
    # job of a non-interactive shell, as under CI, inherits SIGINT ignored).
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "import faults as t, autopeft.cli as c; t.enable_faults(); sys.exit(c.main())")
    worker = subprocess.Popen([sys.executable, "-c", code, "worker", "--study", study, "--storage",
                               pg_url, "--heartbeat", "1", "--isolation", "none", "--quiet"],
                              env=env, start_new_session=True)
    from autopeft.search.storage import open_storage
    from faults import go_silent, run_elsewhere

    storage = open_storage(pg_url, False)
    end = time.monotonic() + 90
    while time.monotonic() < end:  # running, and it has said which process runs it (on a
        # loaded machine the kill could land between ``ask`` and that record)
        trials = optuna.load_study(study_name=study, storage=storage).trials
        if any(t.state.name == "RUNNING" and "worker_process" in t.user_attrs for t in trials):
            break
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)  # mid-trial, no cleanup
    worker.wait()
    trials = optuna.load_study(study_name=study, storage=storage).trials
    killed = [t.number for t in trials if t.state.name == "RUNNING"]
    assert len(killed) == 1
    # as if the worker ran on another machine: only three missed beats can tell it died,
    # and they were missed long ago (no waiting)
    run_elsewhere(optuna.load_study(study_name=study, storage=storage), killed[0])
    go_silent(pg_url, next(t._trial_id for t in trials if t.number == killed[0]))
    assert main(["worker", "--study", study, "--storage", pg_url, "--heartbeat", "1",
                 "--isolation", "none", "--quiet"]) == 0
    trials = optuna.load_study(study_name=study, storage=storage).trials
    by_number = {t.number: t for t in trials}
    assert by_number[killed[0]].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials if not t.user_attrs.get("over_cap")) == 5


def test_storage_passwords_are_masked_everywhere() -> None:
    from autopeft.search.storage import mask

    assert mask("postgresql://me:s3cr3t@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert mask("cannot connect to postgresql://a:b@c/d: refused") == "cannot connect to postgresql://a:***@c/d: refused"
