"""autopeft/search/storage.py: study URLs, masked secrets, disk trouble, dead workers' trials.

Studies live in ``tmp_path`` (SQLite files, journal files); nothing is trained. A dead
worker is simulated by moving its trial's last heartbeat into the past in the SQLite file,
so no test waits for three missed beats.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft.errors import UserError
from autopeft.search.storage import (HEARTBEAT_SECONDS, disk_problem, fail_stale_trials,
                                     heartbeat, mask, open_storage, process_record,
                                     storage_url)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- storage_url ----------------------------------------------------------------------------

def test_a_plain_name_is_a_sqlite_file_in_the_studies_dir(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "deep" / "studies"
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(folder))
    assert storage_url("sst2-run") == f"sqlite:///{folder / 'sst2-run.db'}"
    assert folder.is_dir()  # made up front: the first worker needs it


def test_without_the_env_var_studies_is_under_the_working_dir(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPEFT_STUDIES_DIR", raising=False)
    url = storage_url("s")
    assert url == f"sqlite:///{tmp_path / 'studies' / 's.db'}"
    assert os.path.isabs(url[len("sqlite:///"):])  # workers may start in another folder


@pytest.mark.parametrize("given", ["journal:/x/s.log", "sqlite:////x/other.db",
                                   "postgresql://me:pw@db:5432/studies"])
def test_a_given_url_is_used_as_it_is(given: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path / "studies"))
    assert storage_url("s", given) == given
    assert not (tmp_path / "studies").exists()  # no default folder for a study kept elsewhere


def test_a_studies_dir_that_cannot_be_made_names_the_env_var(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path / "a-file" / "studies"))
    with pytest.raises(UserError, match="cannot create the studies folder .*AUTOPEFT_STUDIES_DIR"):
        storage_url("s")


# --- mask -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url,secrets,kept", [
    ("mysql+pymysql://u:pw1@h:3306/db", ["pw1"], ["mysql+pymysql://u:***@h:3306/db"]),
    ("redis://:tok1@h:6379/0", ["tok1"], ["redis://:***@h"]),
    ("postgresql://u:p%40w@h/db", ["p%40w", "p@w"], ["postgresql://u:***@h/db"]),
    ("postgresql://u@h/db?sslmode=require&token=t1&api_key=k1", ["t1", "k1"],
     ["sslmode=require", "token=***", "api_key=***"]),
    ("postgresql://u@h/db?sslpassword=s1&compass=north", ["s1"], ["compass=north"]),
    ("postgresql://u@h/db?PWD=s2&secret=s3", ["s2", "s3"], ["u@h/db"]),
])
def test_mask_hides_every_secret_and_keeps_the_rest(url: str, secrets: list[str],
                                                    kept: list[str]) -> None:
    masked = mask(url)
    for secret in secrets:
        assert secret not in masked
    for part in kept:
        assert part in masked
    assert mask(masked) == masked  # a stored, masked URL is not masked twice into nonsense


def test_mask_hides_every_url_in_free_text() -> None:
    text = "tried postgresql://a:p1@h/x, then postgresql://b:p2@k/y?password=p3: refused"
    masked = mask(text)
    assert not [secret for secret in ("p1", "p2", "p3") if secret in masked]
    assert masked.startswith("tried postgresql://a:***@h/x, then postgresql://b:***@k/y?password=***")
    assert masked.endswith(" refused")


def test_mask_leaves_text_without_urls_alone() -> None:
    for text in ("the trial failed: CUDA out of memory", "user:name@example is not a URL", ""):
        assert mask(text) == text


# --- open_storage ---------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["sqlite:///", "journal:"])
def test_opening_a_missing_study_file_says_run_search_first(scheme: str, tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(UserError, match=f"no study database at {path}.*autopeft search"):
        open_storage(f"{scheme}{path}", create=False)
    assert not path.exists()  # looking never creates it


def test_create_makes_a_sqlite_study_with_heartbeats(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, create=True)
    assert (tmp_path / "s.db").is_file()
    assert storage.get_heartbeat_interval() == HEARTBEAT_SECONDS
    assert storage.grace_period == 3 * HEARTBEAT_SECONDS  # silent for three beats: dead
    assert storage.get_heartbeat_stale_trial_callback() is not None  # the retry
    assert open_storage(url, create=False, heartbeat=None).get_heartbeat_interval() is None


def test_a_journal_study_is_found_again(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 's.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, create=True))
    study.add_trial(optuna.trial.create_trial(value=1.0))
    again = optuna.load_study(study_name="s", storage=open_storage(url, create=False))
    assert [t.value for t in again.trials] == [1.0]


def test_a_url_without_a_scheme_is_refused_with_the_forms_it_may_take() -> None:
    with pytest.raises(UserError, match="cannot read the storage URL .*sqlite:///PATH.*journal:PATH"):
        open_storage("studies/s.db", create=False)


@pytest.mark.parametrize("url", ["nosuchdb://me:hunter2@127.0.0.1:9/db",
                                 "postgresql://me:hunter2@127.0.0.1:9/db",
                                 "postgres://me:hunter2@127.0.0.1:9/db"])
def test_an_unusable_url_is_one_line_without_its_password(url: str) -> None:
    with pytest.raises(UserError) as err:
        open_storage(url, create=True)
    msg = str(err.value)
    assert msg.startswith("cannot open storage ") and "\n" not in msg
    assert "hunter2" not in msg and "me:***@" in msg
    assert "psycopg2" not in msg  # postgres URLs mean psycopg 3, the driver the extra installs


# --- disk_problem ---------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                  errno.EPERM])
def test_disk_errors_are_one_line_naming_the_file(code: int) -> None:
    line = disk_problem(OSError(code, os.strerror(code), "studies/s.db"))
    assert line is not None and "\n" not in line
    assert os.strerror(code) in line and "studies/s.db" in line
    assert "run the same command again" in line


@pytest.mark.parametrize("exc", [OSError(errno.ENOENT, "No such file or directory", "x"),
                                 ValueError("bad value"), KeyboardInterrupt(),
                                 sqlite3.OperationalError("no such table: trials")])
def test_other_errors_are_not_disk_problems(exc: BaseException) -> None:
    assert disk_problem(exc) is None


def test_a_disk_error_behind_another_error_is_found() -> None:
    def chained(explicit: bool) -> BaseException:
        try:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as low:
                if explicit:
                    raise RuntimeError("saving the trial failed") from low
                raise RuntimeError("saving the trial failed")
        except RuntimeError as high:
            return high

    for explicit in (True, False):  # `raise ... from` and an error raised while handling one
        assert "No space left on device" in (disk_problem(chained(explicit)) or "")


def test_a_read_only_sqlite_database_is_a_disk_problem(tmp_path: Path) -> None:
    import sqlalchemy.exc

    db = tmp_path / "s.db"
    sqlite3.connect(db).close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as err:  # what SQLite itself raises
        conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    line = disk_problem(err.value)
    assert line is not None and "cannot write the study database" in line and "readonly" in line
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO trials", {}, err.value)
    assert disk_problem(wrapped) == line  # as Optuna's storage raises it


def test_a_cycle_of_causes_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert disk_problem(a) is None


# --- heartbeat and fail_stale_trials --------------------------------------------------------

def ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # "heartbeat is meant for optimize()": we beat by hand
        warnings.simplefilter("ignore")
        return study.ask()


def beats(db: Path) -> dict[int, str]:
    """Optuna's table of last heartbeats, by trial id."""
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT trial_id, heartbeat FROM trial_heartbeats"))


def go_silent(db: Path) -> None:
    """The worker died long ago: every last heartbeat moves to the year 2000."""
    from faults import go_silent as silent

    silent(f"sqlite:///{db}")


@pytest.fixture
def beating(tmp_path: Path) -> tuple[optuna.Study, Path]:
    """A study on a SQLite file whose trials beat every second."""
    db = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{db}", create=True, heartbeat=1)
    return optuna.create_study(study_name="s", storage=storage), db


def test_a_silent_trial_fails_and_is_retried_once(beating: tuple[optuna.Study, Path]) -> None:
    study, db = beating
    first = ask(study)
    with heartbeat(study, first):
        pass
    assert first._trial_id in beats(db)  # the trial beat while it ran
    go_silent(db)
    fail_stale_trials(study)
    dead, retry = study.get_trials()
    assert dead.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == dead.number

    second = ask(study)  # the retry's worker dies too
    assert second.number == retry.number
    with heartbeat(study, second):
        pass
    go_silent(db)
    fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]  # once


def test_a_beating_trial_is_left_running(beating: tuple[optuna.Study, Path]) -> None:
    study, db = beating
    trial = ask(study)
    with heartbeat(study, trial):
        pass
    go_silent(db)
    old = beats(db)[trial._trial_id]
    with heartbeat(study, trial):  # the worker is alive again and beats at once
        deadline = time.time() + 2
        while beats(db)[trial._trial_id] == old and time.time() < deadline:
            time.sleep(0.01)
        fail_stale_trials(study)
        assert study.get_trials()[0].state == TrialState.RUNNING
    assert len(study.get_trials()) == 1  # and nothing was queued to retry it


def test_without_heartbeats_nothing_is_failed(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path / 's.db'}", f"journal:{tmp_path / 's.log'}"):
        study = optuna.create_study(study_name="s",
                                    storage=open_storage(url, create=True, heartbeat=None))
        trial = ask(study)
        with heartbeat(study, trial):
            pass
        fail_stale_trials(study)
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]


@pytest.mark.parametrize("exc,reason", [
    (ValueError("boom"), "ValueError: boom"),
    (KeyboardInterrupt(), "interrupted"),  # Ctrl-C: the recipe is queued again on resume
])
def test_an_error_in_the_trial_leaves_it_failed_with_its_reason(
        beating: tuple[optuna.Study, Path], exc: BaseException, reason: str) -> None:
    study, _ = beating
    trial = ask(study)
    with pytest.raises(type(exc)):
        with heartbeat(study, trial):
            raise exc
    (t,) = study.get_trials()
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == reason


def test_an_interrupt_while_the_beat_starts_leaves_no_thread_beating(
        beating: tuple[optuna.Study, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # CI's stacks: a Ctrl-C landing inside Thread.start left Optuna's (non-daemon) beat
    # thread beating for good, and the search waited for it at exit forever.
    study, _ = beating
    trial = ask(study)
    start = threading.Thread.start

    def start_then_interrupt(self: threading.Thread) -> None:
        monkeypatch.setattr(threading.Thread, "start", start)  # once
        start(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        with heartbeat(study, trial):
            pass
    assert study.get_trials()[0].user_attrs["fail_reason"] == "interrupted"
    new = [t for t in threading.enumerate() if t not in before]
    for t in new:
        t.join(timeout=5)
    assert not [t for t in new if t.is_alive()]


def test_a_full_disk_during_a_trial_ends_the_search_in_one_line() -> None:
    study = optuna.create_study()  # in memory: no heartbeat thread, the same contract
    trial = study.ask()
    with pytest.raises(UserError, match="cannot write to disk: No space left on device"):
        with heartbeat(study, trial):
            raise OSError(errno.ENOSPC, "No space left on device")
    (t,) = study.get_trials()
    assert t.state == TrialState.FAIL and "No space left" in t.user_attrs["fail_reason"]


def test_an_error_after_the_trial_was_told_keeps_its_result() -> None:
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(RuntimeError):
        with heartbeat(study, trial):
            study.tell(trial, 0.5)
            raise RuntimeError("after the trial ended")
    (t,) = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.value == 0.5
    assert "fail_reason" not in t.user_attrs


# --- a dead worker process on this machine: failed at once, no heartbeat needed ----------------

def _running(study: optuna.Study, record: dict | None) -> int:
    """A RUNNING trial whose worker record is ``record`` (None: a trial of before records)."""
    from autopeft.search.storage import WORKER, WORKER_PROCESS

    trial = study.ask()
    trial.set_user_attr("label", "lora")
    trial.set_user_attr(WORKER, "somewhere:1")
    if record is not None:
        trial.set_user_attr(WORKER_PROCESS, record)
    return trial.number


def _dead_process_record(number: int) -> dict:
    """The record of a real process that ran and was killed (SIGKILL)."""
    import signal
    import subprocess
    import sys

    from autopeft.search.storage import process_record

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = process_record(number, pid=proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return record


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times: Linux")
def test_a_trial_of_a_dead_process_here_fails_at_once_and_is_retried(tmp_path: Path) -> None:
    from autopeft.report.show import rows
    from autopeft.search.storage import WORKER_PROCESS, fail_dead_workers, process_record

    # Heartbeats on, long ones: only the process check can fail anything in this test.
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}",
                                                     create=True, heartbeat=HEARTBEAT_SECONDS),
                                directions=["maximize", "minimize", "minimize"])
    dead = _running(study, _dead_process_record(0))
    live = _running(study, process_record(1))  # this very process
    reused = _running(study, {**process_record(2), "start": "1"})  # its PID, another start
    elsewhere = _running(study, {**_dead_process_record(3), "host": "another-machine"})
    copied = _running(study, {**_dead_process_record(3), "trial": 3})  # a retry's inherited one
    old = _running(study, None)
    assert sorted(fail_dead_workers(study)) == [dead, reused]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead] == states[reused] == TrialState.FAIL
    assert all(states[n] == TrialState.RUNNING for n in (live, elsewhere, copied, old))
    retries = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [dead, reused]
    assert all(WORKER_PROCESS not in t.user_attrs and "fail_reason" not in t.user_attrs
               for t in retries), "a retry must not carry the dead run's worker or reason"
    notes = {r.number: r.note for r in rows(study, all_trials=True)}
    assert notes[dead] == "its worker process (somewhere:1) died (killed); queued again"
    assert notes[retries[0].number] == f"queued: retry of trial {dead}"
    assert fail_dead_workers(study) == []  # once: the retry is queued, not the trial again

    # A retry whose worker dies too is not queued a third time (one retry, as heartbeats).
    retry = study.ask()
    assert retry.number == retries[0].number
    retry.set_user_attr(WORKER_PROCESS, _dead_process_record(retry.number))
    assert fail_dead_workers(study) == [retry.number]
    assert study.get_trials()[retry.number].user_attrs["fail_reason"].endswith(
        "not queued again: it was a retry")
    assert sum(t.state == TrialState.WAITING for t in study.get_trials()) == 1


def test_fail_stale_trials_fails_dead_processes_even_without_heartbeats(tmp_path: Path) -> None:
    """A journal study (no heartbeats in Optuna) loses no killed trial on this machine."""
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("process start times: Linux")
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'j.log'}", create=True),
                                directions=["maximize", "minimize", "minimize"])
    number = _running(study, _dead_process_record(0))
    fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states[number] == TrialState.FAIL and TrialState.WAITING in states


def test_a_process_start_time_tells_a_reused_pid_apart() -> None:
    from autopeft.search.storage import process_start, worker_alive, process_record

    if process_start(os.getpid()) is None:
        pytest.skip("process start times: Linux")
    me = process_record(7)
    assert worker_alive(me, 7) is True
    assert worker_alive({**me, "start": str(int(me["start"]) + 1)}, 7) is False
    assert worker_alive({**me, "boot": "another boot"}, 7) is False  # the machine restarted
    assert worker_alive({**me, "pid_namespace": "pid:[1]"}, 7) is None  # another container
    assert worker_alive(me, 8) is None and worker_alive("host:1", 7) is None


def test_a_trial_whose_worker_never_recorded_itself_fails_after_three_beats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed between ``ask`` and recording itself leaves neither record nor beat."""
    import datetime
    from types import SimpleNamespace

    from autopeft.search import storage as st

    now = datetime.datetime(2026, 12, 6, 12, 0, 0)
    ago = lambda s: SimpleNamespace(user_attrs={}, datetime_start=now - datetime.timedelta(seconds=s))  # noqa: E731
    assert st.unrecorded_too_long(ago(181), 180, now)
    assert not st.unrecorded_too_long(ago(179), 180, now)  # may be live: it records itself soon
    recorded = ago(10_000)
    recorded.user_attrs[st.WORKER_PROCESS] = process_record(0)
    assert not st.unrecorded_too_long(recorded, 180, now)  # the process check decides

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}",
                                                     create=True, heartbeat=1),
                                directions=["maximize", "minimize", "minimize"])
    orphan = study.ask().number
    live = _running(study, process_record(1))
    assert st.fail_dead_workers(study) == []  # started just now: not yet
    monkeypatch.setattr(st, "GRACE_BEATS", 0)  # as if three beats had passed
    assert st.fail_dead_workers(study) == [orphan]
    failed = study.get_trials()[orphan]
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"].startswith(
        "its worker stopped before it recorded itself")
    assert study.get_trials()[live].state == TrialState.RUNNING
    retries = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [t.system_attrs["failed_trial"] for t in retries] == [orphan]
