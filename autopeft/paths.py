"""Default locations: ``studies/`` (or ``AUTOPEFT_STUDIES_DIR``) holds databases and caches."""
from __future__ import annotations

import os


def studies_dir() -> str:
    return os.environ.get("AUTOPEFT_STUDIES_DIR", "studies")


def cache_dir() -> str:
    """Tokenised data shared by every study and every run."""
    return os.path.join(studies_dir(), ".cache")
