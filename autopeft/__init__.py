"""autopeft: find the best parameter-efficient fine-tuning configuration for a model and task.

The library API lives in ``autopeft.api`` and is re-exported here lazily, so that
``import autopeft`` (and ``autopeft --help``) stays fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["search", "search_with_trainer", "worker", "load_study", "front", "select_trial", "export", "train", "plot",
           "load", "methods", "tasks", "SearchConfig", "UserError"]


def __getattr__(name: str) -> Any:
    if name == "UserError":
        from autopeft.errors import UserError

        return UserError
    if name in __all__:
        from autopeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
