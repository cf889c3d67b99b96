"""Wall-clock budgets: parse ``30m`` / ``4h`` / ``1h30m``, the deadlines of a search's phases,
and whether a trial fits.

One ``Budget`` feeds every deadline: the whole budget (model loading, search, refit) and its
search phase (the first ``1 - refit_share`` of it). Times are wall-clock (``time.time()``),
so the search stores its budget in the study (``store``) and every worker reads the same
deadlines back (``Budget.of_study``): all stop searching when the refit's share begins."""
from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autopeft.errors import UserError
from autopeft.results import CONFIRM_OF, INPUT_TOKENS, SCORING_SECONDS, STEPS, STEPS_TRAINED

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

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


Clock = Callable[[], float]  # wall-clock seconds since the epoch, as ``time.time``


@dataclass(frozen=True)
class Phase:
    """``seconds`` of wall-clock time from ``started`` (None: no time limit). ``clock`` reads
    the time (``time.time``; a test passes its own to move time without waiting)."""

    seconds: float | None
    started: float = field(default_factory=time.time)
    clock: Clock = field(default=time.time, kw_only=True, compare=False, repr=False)

    @property
    def end(self) -> float | None:
        return None if self.seconds is None else self.started + self.seconds

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.seconds - self.elapsed())

    def stretched(self, grace: float) -> Phase:
        """This phase, ending ``grace`` of the whole length later: the end a run that may
        finish past it reads (the refit's first member)."""
        return replace(self, seconds=None if self.seconds is None else self.seconds * (1 + grace))

    def fits(self, predicted_trial_seconds: float | None) -> bool:
        """Start another trial only if it is predicted to end before the deadline."""
        left = self.left()
        if left is None:
            return True
        return left > 0 and (predicted_trial_seconds is None or predicted_trial_seconds <= left)


@dataclass(frozen=True)
class Budget(Phase):
    """The whole budget of a search (a ``Phase``: the refit ends with it) and ``search``,
    its first ``1 - refit_share``: the phase in which trials start, in every worker."""

    refit_share: float = 0.0

    @property
    def search(self) -> Phase:
        seconds = None if self.seconds is None else self.seconds * (1 - self.refit_share)
        return Phase(seconds, self.started, clock=self.clock)

    def with_refit_share(self, share: float) -> Budget:
        return replace(self, refit_share=share)

    def with_refit_seconds(self, seconds: float) -> Budget:
        """The refit gets the last ``seconds`` of the whole budget. Why not a share: a plan
        is made after loading and the cost probe, for the time left then, so its refit share
        is of that time, not of the whole budget (at R = 1 the difference ended the search
        phase before its one trial could finish)."""
        if self.seconds is None or self.seconds <= 0:
            return self
        return replace(self, refit_share=min(1.0, max(0.0, seconds / self.seconds)))

    def store(self, study: Study) -> None:
        """Into the study, for its workers. ``deadline`` (the search phase's end) is what
        workers of earlier versions read."""
        study.set_user_attr("budget", {"seconds": self.seconds, "started": self.started,
                                       "refit_share": self.refit_share})
        study.set_user_attr("deadline", self.search.end)

    @classmethod
    def of_study(cls, attrs: Mapping[str, Any], clock: Clock = time.time) -> Budget:
        """The budget a search stored in a study's ``attrs``; from only a ``deadline``, the
        time until it, all of it search (None, or neither: no time limit)."""
        raw = attrs.get("budget")
        if raw:
            return cls(raw["seconds"], raw["started"], raw["refit_share"], clock=clock)
        deadline = attrs.get("deadline")
        now = clock()
        return cls(None if deadline is None else max(0.0, deadline - now), now, clock=clock)


def token_factor(input_tokens: int, row_tokens: float) -> float:
    """How much dearer a step and a scoring are when ``input_tokens`` virtual tokens go before
    every row of ``row_tokens`` padded tokens (1.0 where either is unknown): in proportion to
    the tokens, the layers' matrix products being most of a step at these lengths (the
    attention's extra keys are not counted). An upper bound, the fixed part of a step not
    scaling: the real B arm on SST-2 (MiniLM, rows of 14 padded tokens) trained prompt tuning
    with 50 virtual tokens at 0.96 s a step, scorings in, against 0.27 for its LoRA trials,
    3.5x, where this says 4.6x (``bench/real_check.py``, 2026-12-07)."""
    return 1.0 + input_tokens / row_tokens if input_tokens > 0 and row_tokens > 0 else 1.0


def predict_seconds(attrs: Iterable[dict[str, Any]], steps: int, prior: float | None = None,
                    row_tokens: float = 0.0, label: str | None = None,
                    input_tokens: int = 0) -> float | None:
    """Predicted wall time of a ``steps``-step trial: the median seconds per step of the
    search trials that trained (complete or stopped at a rung; start-up and rung evaluations
    included; per step they ran themselves, ``steps_trained``), times ``steps``. None
    before any trial trained, except for a candidate whose virtual tokens scale the probe's
    rate (``prior``), so that one predicted past the search phase is not started (the real
    B arm on SST-2 at R = 3 drew prompt tuning with 50 virtual tokens first; predicted at
    52 s with 54 s left, it still started, took 41 s and scored at chance). Any other first
    candidate starts: the plan was sized so that one fits.

    Per candidate. Each trial's rate is taken over its ``token_factor`` and the prediction
    multiplied by the candidate's (``input_tokens``): one prompt-tuning trial is no evidence
    that the next LoRA is slow, nor a LoRA that the next prompt tuning is fast. Where trials
    of the candidate's ``label`` trained, their rates alone predict it: the same method on
    the same machine is the best evidence there is (full fine-tuning ran 0.45 s a step,
    scorings in, where the LoRA trials ran 0.27: the real B arm on SST-2, MiniLM). With no
    ``label``: the next trial, whatever it will be.

    ``prior``, the probe's seconds per step, counts as one more trial where no trial of the
    label trained. Why: one slow first trial alone predicted every trial as slow and ended
    the search (a random draw of prompt tuning, 40 s for 42 steps where the probe's LoRA took
    11 s: the real B arm on SST-2 at R = 10 stopped after 2 trials with half its budget left,
    0.574 on test; with the prior, 11 trials and 0.848, ``bench/real_check.py``, MiniLM);
    from three trials on, the median leaves an outlying probe aside."""
    rated = [(a.get("label"), a["wall_seconds"] / trained
              / token_factor(a.get(INPUT_TOKENS, 0), row_tokens))
             for a in attrs  # a continued trial ran fewer steps than it reached
             if (trained := a.get(STEPS_TRAINED, a.get(STEPS))) and CONFIRM_OF not in a
             and a.get("wall_seconds") is not None]
    if not rated:
        if prior and input_tokens > 0 and row_tokens > 0:
            return prior * steps * token_factor(input_tokens, row_tokens)
        return None
    same = [rate for name, rate in rated if label is not None and name == label]
    rates = same or [rate for _, rate in rated] + ([prior] if prior else [])
    return statistics.median(rates) * steps * token_factor(input_tokens, row_tokens)


def predict_part(attrs: Iterable[dict[str, Any]], part: str = SCORING_SECONDS) -> float:
    """Seconds a trial spends on ``part`` of its wall time (``SCORING_SECONDS``,
    ``SETUP_SECONDS``): the median over the trials that recorded it (0 before any did)."""
    spent = [a[part] for a in attrs if a.get(part) is not None]
    return statistics.median(spent) if spent else 0.0
