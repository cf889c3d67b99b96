"""Wall-clock budgets: parse ``30m`` / ``4h`` / ``1h30m`` and decide whether a trial fits."""
from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``4h``, ``1h30m``, ``2d``; a bare number is minutes.

    Zero is refused (a search that runs nothing), and so is a number too large to be a
    finite float: any finite budget is safe (deadlines are float seconds)."""
    s = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        parts = [(s, "m")]
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
        if not s or not parts or "".join(n + u for n, u in parts) != s:
            raise UserError(f"cannot read the budget {text!r}; use e.g. 30m, 4h, 1h30m or 90s "
                            "(a bare number is minutes)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"the budget {text!r} is zero; give a positive duration, e.g. 30m")
    if not math.isfinite(seconds):
        raise UserError(f"the budget {text!r} is too large; give a duration such as 30d")
    return seconds


@dataclass
class Budget:
    """A deadline for the whole search (None: no time limit)."""

    seconds: float | None
    started: float = field(default_factory=time.monotonic)

    def share(self, fraction: float) -> Budget:
        """The first ``fraction`` of this budget (same start): a phase's own deadline."""
        return Budget(None if self.seconds is None else self.seconds * fraction, self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed())

    def fits(self, predicted_trial_seconds: float | None) -> bool:
        """Start another trial only if it is predicted to end before the deadline."""
        left = self.left()
        if left is None:
            return True
        return left > 0 and (predicted_trial_seconds is None or predicted_trial_seconds <= left)


def predict_seconds(attrs: Iterable[dict[str, Any]], steps: int) -> float | None:
    """Predicted wall time of a ``steps``-step trial: the median seconds per step of the
    trials that trained (complete or stopped at a rung; start-up and rung evaluations
    included), times ``steps``. None before any trial trained."""
    rates = [a["wall_seconds"] / a["steps"] for a in attrs
             if a.get("steps") and a.get("wall_seconds") is not None]
    return statistics.median(rates) * steps if rates else None
