"""Wall-clock budgets: parse ``30m`` / ``4h`` / ``1h30m`` and decide whether a trial fits."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from autopeft.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``4h``, ``1h30m``, ``2d``; a bare number is minutes."""
    s = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
    if not s or not parts or "".join(n + u for n, u in parts) != s:
        raise UserError(f"cannot read the budget {text!r}; use e.g. 30m, 4h, 1h30m or 90s")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"the budget {text!r} is zero; give a positive duration")
    return seconds


@dataclass
class Budget:
    """A deadline for the whole search (None: no time limit)."""

    seconds: float | None
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

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
