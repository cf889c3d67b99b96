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
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from typing import Any

from autopeft.errors import UserError
from autopeft.paths import studies_dir

HEARTBEAT_SECONDS = 60
GRACE_BEATS = 3


def storage_url(study: str, storage: str | None = None) -> str:
    """The storage URL for ``study``; the default is a SQLite file under ``studies/``."""
    if storage:
        return storage
    folder = studies_dir()
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(folder, study + '.db'))}"


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***``: safe to print or store."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", text)


def _driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy's default would be psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(url: str, create: bool, heartbeat: int | None = HEARTBEAT_SECONDS) -> Any:
    """An Optuna storage for ``url``. A SQLite or journal file must exist unless ``create``."""
    import optuna

    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            path = url[len(prefix):]
            if not create and not os.path.isfile(path):
                raise UserError(f"no study database at {path}; run `autopeft search` first, or "
                                "pass --storage with the study's URL")
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
                    max_retry=1))
            return optuna.storages.RDBStorage(_driver(url), **beat)
    except UserError:
        raise
    except Exception as exc:  # bad driver, unreachable host, bad credentials
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot open storage {mask(url)}: {mask(first)}") from None


def fail_stale_trials(study: Any) -> None:
    """Mark trials of dead workers FAIL (and enqueue their retry); a no-op without heartbeats."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def heartbeat(study: Any, trial: Any) -> Iterator[None]:
    """Beat for ``trial`` while it runs (Optuna does this in ``optimize``; we ask and tell)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    with get_heartbeat_thread(trial._trial_id, study._storage):
        yield
