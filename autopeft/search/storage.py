"""Where studies live: ``studies/<name>.db`` (SQLite) by default, any Optuna URL otherwise."""
from __future__ import annotations

import os
import re

from autopeft.errors import UserError
from autopeft.paths import studies_dir


def storage_url(study: str, storage: str | None = None) -> str:
    """The storage URL for ``study``; the default is a SQLite file under ``studies/``."""
    if storage:
        return storage
    folder = studies_dir()
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(folder, study + '.db'))}"


def mask(url: str) -> str:
    """The URL with its password replaced by ``***``: safe to print."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str, create: bool) -> object:
    """An Optuna storage for ``url``. The SQLite file must exist unless ``create``."""
    import optuna

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not create and not os.path.isfile(path):
            raise UserError(f"no study database at {path}; run `autopeft search` first, or pass "
                            "--storage with the study's URL")
    try:
        return optuna.storages.RDBStorage(url) if "://" in url else optuna.storages.get_storage(url)
    except Exception as exc:  # bad driver, unreachable host, bad credentials
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot open storage {mask(url)}: {mask(first)}") from None
