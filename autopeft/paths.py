"""Default locations: ``studies/`` (or ``AUTOPEFT_STUDIES_DIR``) holds databases and caches."""
from __future__ import annotations

import os


def studies_dir() -> str:
    return os.environ.get("AUTOPEFT_STUDIES_DIR", "studies")


def cache_dir() -> str:
    """Tokenised data shared by every study and every run."""
    return os.path.join(studies_dir(), ".cache")


def checkpoints_dir(study: str) -> str:
    """A study's run checkpoints (``autopeft/checkpoint.py``): one file per candidate and
    schedule, the latest rung only. Local to this machine, under the git-ignored studies
    folder even when the study's storage is a database elsewhere."""
    return os.path.join(studies_dir(), study, "checkpoints")
