"""Where studies live, and how a dead worker's trial is noticed.

* ``sqlite:///PATH`` (default: ``studies/<name>.db``): one machine; created once, before
  any worker starts (two processes creating one new SQLite file at once crash).
* ``postgresql://user:pass@host/db``: many workers, many machines (driver: psycopg 3,
  ``pip install -e ".[postgres]"``); also any other SQLAlchemy URL Optuna takes.
* ``journal:PATH``: Optuna's journal file, for shared filesystems without a database.

Heartbeats (RDB storages): a running trial beats every ``heartbeat`` seconds; one silent
for three beats belongs to a dead worker (SIGKILL, lost machine) and becomes FAIL, and
Optuna's retry callback enqueues it once more, so no candidate is lost silently. The
journal storage has no heartbeat in Optuna: a killed worker's trial stays RUNNING there.

Dead processes on this machine (``fail_dead_workers``): a running trial records its worker
process (``WORKER_PROCESS``: host, boot, PID namespace, PID and the process's start time).
A search, a worker, ``show`` or ``plot`` on the same machine that finds that process gone
(or its PID taken by another process: the start time differs) fails the trial at once and
queues its retry, the same retry as for a missed heartbeat. Trials of other machines (or
other containers) are left to the heartbeats. A worker killed in the milliseconds between
asking for a trial and recording itself leaves a trial with neither record nor beat: one
still unrecorded (and not beating) three beats after it started is failed and retried the
same way.

Disk trouble (a full disk, a read-only study file or folder) is not a candidate's fault:
the trial in flight becomes FAIL where the storage still takes it, and the search stops
with one line (``disk_problem``). Printed and stored URLs go through ``mask``.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from autopeft.checks import plain_name
from autopeft.errors import UserError
from autopeft.paths import studies_dir
from autopeft.results import FAIL_REASON, INTERRUPTED

if TYPE_CHECKING:
    from optuna.trial import Trial
    from optuna import Study  # only for annotations: optuna stays a lazy import

HEARTBEAT_SECONDS = 60
GRACE_BEATS = 3
RETRIES = 1  # a trial whose worker died is queued once more, not again and again
WORKER = "worker"  # user attr: "host:pid", for people
WORKER_PROCESS = "worker_process"  # user attr: ``process_record``, for fail_dead_workers


def storage_url(study: str, storage: str | None = None) -> str:
    """The storage URL for ``study``; the default is a SQLite file under ``studies/``."""
    if storage:
        return storage
    folder = studies_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the studies folder {folder} ({exc.strerror}); make it "
                        "writable or set AUTOPEFT_STUDIES_DIR") from None
    return f"sqlite:///{os.path.abspath(os.path.join(folder, study + '.db'))}"


def existing_url(study: str, storage: str | None = None) -> str:
    """The storage URL of an existing ``study``: ``storage``, else its SQLite file under
    ``studies/``, which must exist (nothing is created to read a study)."""
    if storage:
        return storage
    path = os.path.join(studies_dir(), f"{plain_name(study)}.db")  # the name is a file name
    if not os.path.isfile(path):
        raise UserError(f"no study database {path}; run `autopeft search` first, or pass "
                        "--storage with the study's URL")
    return f"sqlite:///{os.path.abspath(path)}"


SECRET_KEYS = ("password", "passwd", "pwd", "pass", "sslpassword", "secret", "token", "api_key")
# user:password@ after a scheme; the password may hold spaces and '@' (up to the last '@').
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#\s'\"]*):[^/?#'\"\n]*@")
_QUERY = re.compile(r"(?i)([?&;](?:%s)=)[^&;#\s'\"]*" % "|".join(SECRET_KEYS))


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***``: safe to print or store.

    Passwords in the user part (``user:pw@``, ``:pw@``, with spaces) and in the query
    (``?password=pw``). A whole URL is also parsed and rendered by SQLAlchemy with the
    password hidden; free text (an error message quoting a URL) is masked by pattern."""
    out = _QUERY.sub(r"\1***", _USERINFO.sub(r"\1:***@", text))
    if "://" not in text or any(c.isspace() for c in text.strip()):
        return out
    from sqlalchemy.engine import make_url

    try:
        url = make_url(out.strip())
    except Exception:  # not a URL SQLAlchemy reads: the pattern's answer stands
        return out
    hidden = {k: "***" for k in url.query if k.lower() in SECRET_KEYS}
    if url.password is None and not hidden:
        return out
    return url.update_query_dict(hidden).render_as_string(hide_password=True).replace(
        "%2A%2A%2A", "***")


def _driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy's default would be psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(url: str, create: bool, heartbeat: int | None = HEARTBEAT_SECONDS) -> Any:
    """An Optuna storage for ``url``. A SQLite or journal file must exist unless ``create``;
    with ``create`` (a search, a worker) it must be writable."""
    import optuna

    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            path = url[len(prefix):]
            if not create and not os.path.isfile(path):
                raise UserError(f"no study database at {path}; run `autopeft search` first, or "
                                "pass --storage with the study's URL")
            if create:
                _check_writable(path)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        if "://" not in url:
            raise UserError(f"cannot read the storage URL {mask(url)}; use sqlite:///PATH, "
                            "postgresql://USER:PASSWORD@HOST/DB or journal:PATH")
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beat = {} if not heartbeat else dict(
                heartbeat_interval=heartbeat, grace_period=GRACE_BEATS * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=RETRIES))
            return optuna.storages.RDBStorage(_driver(url), **beat)
    except UserError:
        raise
    except Exception as exc:  # bad driver, unreachable host, bad credentials
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot open storage {mask(url)}: {mask(first)}") from None


def _check_writable(path: str) -> None:
    """A search writes the study file and, beside it, SQLite's journal: both must be allowed."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        raise UserError(f"the study database {path} is read-only; make it writable (or copy "
                        "it elsewhere and pass --storage) to resume")
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise UserError(f"the folder {folder} is read-only and the study database needs to "
                        "write there; make it writable (or copy the study elsewhere and pass "
                        "--storage)")


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
SQLITE_DISK = ("readonly database", "disk is full", "unable to open database file",
               "disk i/o error")


def disk_problem(exc: BaseException) -> str | None:
    """One line saying what the disk refused, when ``exc`` (or its cause) is a full disk,
    a read-only file or folder, or a refused write; None for anything else."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            where = f" ({cur.filename})" if cur.filename else ""
            return (f"cannot write to disk: {cur.strerror}{where}; free space or make it "
                    "writable, then run the same command again")
        text = str(getattr(cur, "orig", None) or cur).strip().splitlines()
        if text and type(cur).__name__ == "OperationalError" and any(
                s in text[0].lower() for s in SQLITE_DISK):
            return (f"cannot write the study database ({mask(text[0])}); free space or make "
                    "the database and its folder writable, then run the same command again")
        cur = cur.__cause__ or cur.__context__
    return None


def end_trial_failed(study: Study, trial: Trial, reason: str) -> bool:
    """Best effort: the trial becomes FAIL with ``reason`` if it is still RUNNING (the
    storage may refuse: a full disk). True if it is no longer RUNNING afterwards."""
    from optuna.trial import TrialState

    def state() -> Any:
        return study._storage.get_trial(trial._trial_id).state

    with contextlib.suppress(Exception):
        if state() != TrialState.RUNNING:
            return True
        with contextlib.suppress(Exception):
            trial.set_user_attr(FAIL_REASON, reason[:500])
        study.tell(trial, state=TrialState.FAIL)
    with contextlib.suppress(Exception):
        return state() != TrialState.RUNNING
    return False


def fail_stale_trials(study: Study) -> None:
    """Mark trials of dead workers FAIL (and enqueue their retry): at once for a dead
    process on this machine (``fail_dead_workers``), after three missed heartbeats for any
    other (a no-op without heartbeats)."""
    import optuna

    fail_dead_workers(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# -- the worker process of a running trial ------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """Two containers may share a host name but not a PID namespace: PIDs compare only
    within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux ``/proc/PID/stat`` field
    22); None if no such live process (gone, a zombie) or no ``/proc`` to ask."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # field 3, the state: zombie or dead
        return None
    return fields[19]


def _here() -> dict[str, Any]:
    return {"host": socket.gethostname(), "boot": _read("/proc/sys/kernel/random/boot_id"),
            "pid_namespace": _pid_namespace()}


def process_record(number: int, pid: int | None = None) -> dict[str, Any]:
    """Who runs trial ``number``: this machine (host name, boot id, PID namespace) and the
    process (PID and start time, so a PID reused later by another process is told apart).
    The trial number is part of it: Optuna copies a failed trial's attributes to its
    retry, and a copied record must not be judged as the retry's."""
    pid = os.getpid() if pid is None else pid
    return {"trial": number, **_here(), "pid": pid, "start": process_start(pid)}


def worker_alive(record: Any, number: int) -> bool | None:
    """True/False: the process in ``record`` still runs / is gone (or its PID now belongs
    to another process). None: this process cannot tell (another machine, container or
    boot, no ``/proc``, a record of another trial): the heartbeats decide."""
    if not isinstance(record, dict) or record.get("trial") != number:
        return None
    here = _here()
    if None in here.values() or record.get("start") is None or not isinstance(
            record.get("pid"), int):
        return None
    if record.get("host") != here["host"] or record.get("pid_namespace") != here["pid_namespace"]:
        return None
    if record.get("boot") != here["boot"]:
        return False  # the machine restarted since: every process of before is gone
    return process_start(record["pid"]) == record["start"]


def unrecorded_too_long(trial: Any, grace_seconds: float, now: datetime.datetime) -> bool:
    """A RUNNING trial without a worker record ``grace_seconds`` after it started: its worker
    died between ``ask`` and its first beat and record (a live one has both within
    milliseconds), so nothing else would ever fail it."""
    start = trial.datetime_start
    return (WORKER_PROCESS not in trial.user_attrs and start is not None
            and (now - start).total_seconds() > grace_seconds)


def _beats(storage: Any, trial_id: int) -> bool:
    """Whether ``trial_id`` has a heartbeat (an RDB storage with heartbeats): then Optuna's
    heartbeat check decides, not ``unrecorded_too_long``. True where it cannot tell."""
    backend = getattr(storage, "_backend", storage)  # Optuna caches RDB storages
    if not getattr(backend, "heartbeat_interval", None):
        return False  # no heartbeats here (journal, or turned off)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(backend.scoped_session) as session:
            return models.TrialHeartbeatModel.where_trial_id(trial_id, session) is not None
    except Exception:
        return True


def _death(storage: Any, trial: Any, grace_seconds: float, now: datetime.datetime) -> str | None:
    """Why ``trial`` (RUNNING) has a dead worker, or None while it may be alive."""
    if unrecorded_too_long(trial, grace_seconds, now) and not _beats(storage, trial._trial_id):
        return f"its worker stopped before it recorded itself (killed within {grace_seconds:g} s)"
    if worker_alive(trial.user_attrs.get(WORKER_PROCESS), trial.number) is False:
        return f"its worker process ({trial.user_attrs.get(WORKER, '?')}) died (killed)"
    return None


def fail_dead_workers(study: Study) -> list[int]:
    """Fail each RUNNING trial whose worker process on this machine is gone (or that never
    recorded its worker, ``unrecorded_too_long``), and queue its retry through Optuna's
    ``RetryHeartbeatStaleTrialCallback`` (what a missed heartbeat does, without waiting three
    beats). Best effort: a read-only storage changes nothing. Returns the failed numbers."""
    import copy

    import optuna
    from optuna.trial import TrialState

    failed = []
    with contextlib.suppress(Exception):
        storage = study._storage
        beat = getattr(storage, "get_heartbeat_interval", lambda: None)() or HEARTBEAT_SECONDS
        now = datetime.datetime.now()  # Optuna stamps datetime_start with the local clock
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            death = _death(storage, t, GRACE_BEATS * beat, now)
            if death is None:
                continue
            # The retry callback retries a trial that was not retried RETRIES times before.
            again = len(t.system_attrs.get("retry_history", [])) < RETRIES
            reason = death + ("; queued again" if again else "; not queued again: it was a retry")
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_user_attr(t._trial_id, FAIL_REASON, reason)
                if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    failed.append(t)
        for t in failed:
            again = copy.deepcopy(storage.get_trial(t._trial_id))
            for key in (WORKER, WORKER_PROCESS, FAIL_REASON):  # of the dead run, not the retry
                again.user_attrs.pop(key, None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)(study, again)
    return [t.number for t in failed]


class HeldInterrupt:
    """A Ctrl-C (or SIGTERM) that arrived while ``interrupts_held`` held it back."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def deliver(self) -> None:
        """Raise it now, where the trial it interrupted is recorded (``heartbeat``)."""
        if self.signum is not None:
            self.signum = None
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_held() -> Iterator[HeldInterrupt]:
    """Hold Ctrl-C and SIGTERM back while Optuna creates a trial: one landing between the
    trial's creation and ``heartbeat`` left it RUNNING for good (seen in
    ``test_survival``'s Ctrl-C test on a loaded machine). Only signals with a Python handler
    are held (one ignored stays ignored), and only in the main thread, where they land."""
    held = HeldInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    before = {s: h for s, h in before.items() if callable(h)}

    def hold(signum: int, frame: object) -> None:
        held.signum = signum

    for s in before:
        signal.signal(s, hold)
    try:
        yield held
    finally:
        for s, h in before.items():
            signal.signal(s, h)


@contextlib.contextmanager
def heartbeat(study: Study, trial: Trial) -> Iterator[None]:
    """Beat for ``trial`` while it runs (Optuna does this in ``optimize``; we ask and tell).

    An error that escapes the trial never leaves it RUNNING: it becomes FAIL first. A disk
    problem (``disk_problem``) then ends the search with one line instead of a traceback."""
    stop = threading.Event()
    try:
        _start_beating(study._storage, trial._trial_id, stop)
        yield
    except BaseException as exc:
        problem = disk_problem(exc)
        reason = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else (
            problem or f"{type(exc).__name__}: {exc}")
        end_trial_failed(study, trial, reason)
        if problem:
            raise UserError(problem) from None
        raise
    finally:
        stop.set()


def _start_beating(storage: Any, trial_id: int, stop: threading.Event) -> None:
    """Record ``trial_id``'s heartbeat every interval until ``stop`` is set. Not Optuna's
    beat thread: it is no daemon and stops only in its context's exit, so a Ctrl-C landing
    inside ``Thread.start`` left it beating and the search waiting for it at exit forever
    (CI's stacks of ``test_survival``'s Ctrl-C test). This one is a daemon, stopped in
    ``heartbeat``'s ``finally``."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not is_heartbeat_enabled(storage):
        return
    interval = storage.get_heartbeat_interval()
    storage.record_heartbeat(trial_id)  # at once: a trial that has begun has beaten

    def beat() -> None:
        while not stop.wait(timeout=interval):
            storage.record_heartbeat(trial_id)

    threading.Thread(target=beat, name=f"autopeft-heartbeat-{trial_id}", daemon=True).start()
