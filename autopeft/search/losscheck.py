"""The early check on the training loss: a candidate that is not learning stops before it
costs a rung, and a rung only counts once the loss has moved off its start.

Why: in a 20-minute MiniLM/SST-2 search 9 of 52 candidates trained to the end at chance
(learning rates at which their method cannot learn in 125 steps), and their training loss
said so early. Scores at an early rung are chance for every candidate, so they cannot tell;
the loss can, once the learning rate has warmed up.

The rule (measured on MiniLM/SST-2, batch 32, a 270-step schedule, warm-up 16 steps; the
losses of one batch vary by about 0.02 around chance, 0.693 = ln 2):

* **start**: the mean of the first ``START_STEPS`` losses (the learning rate is still tiny);
  the reference is the lower of the start and, for classification, chance ``ln(num_labels)``;
* **recent**: the mean of the last ``LOSS_WINDOW`` losses;
* the loss **has moved** when recent < reference x (1 - ``LOSS_MARGIN``);
* the **checks** are made at step ``c = warm-up + LOSS_PATIENCE`` (on a schedule longer than
  270 steps, a share of it: ``windows``) and again at ``2c``: a
  candidate whose loss has not moved at a check is stopped (PRUNED, with its reason). Two
  checks, because the losses of one seed's batches dip and rise together for every
  candidate (the same batches reach all of them): on another 8,640-row subset prompt tuning
  at 1e-3 was at 0.681 at step 56, below the threshold by chance, back at 0.695 by step 112
  and still at chance (0.509) at step 120, while the LoRA recipe was at 0.660 and 0.473
  (0.783 at step 120).
  Measured at step 56 (16 + 40): the LoRA recipe at 5e-4, a slow learner that scores chance
  at step 60, had recent 0.677 against a threshold of 0.686 (passes); prompt tuning at 1e-3
  0.694 and BitFit at 1e-4 0.689 (stopped); prompt tuning at 0.3 0.666 (passes). At step 46
  the LoRA recipe was still at 0.686: the patience is what lets a slow good recipe pass.
  Earlier windows are noisier than the margin (the same batches reach every candidate with
  the same seed: at step 36 prompt tuning at 1e-3 was at 0.685, below the threshold), so
  before the check the loss "has moved" only as of now (a rung then counts), and only the
  check decides.

Plain Python, no torch: ``search/objective.py`` feeds it the losses from ``on_step``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property

START_STEPS = 10  # the start: the mean loss over the first steps
LOSS_WINDOW = 20  # recent: the mean loss over the last steps
LOSS_PATIENCE = 40  # steps after the warm-up before the first check
LOSS_MARGIN = 0.01  # moved: recent below the reference by this fraction of it
# On a long schedule the window and the patience grow with it: never less than the steps
# above, and at least these shares of the schedule, which is what the steps above are of
# the 270-step schedule they were measured on (20/270, 40/270). Why: the steps were measured
# on schedules of 63-270 steps only. Checked on the recorded curves of four tasks (MiniLM;
# SST-2, CoLA, STS-B 100-125 steps, RTE 63; bench/curves): no run that ended above the
# majority class (by two sampling errors) was stopped, all 12 RTE runs (none learned in 63
# steps) were. On 2,105 steps (roberta-base, one epoch of SST-2) a check at step 166 would
# judge a slow method after 8% of its schedule; with the shares it first checks at step
# 438 (21%).
# Nothing longer than 270 steps was measured: the shares keep the measured proportion.
WINDOW_SHARE = LOSS_WINDOW / 270
PATIENCE_SHARE = LOSS_PATIENCE / 270


def windows(schedule_steps: int | None) -> tuple[int, int]:
    """(window, patience) in steps for a schedule of ``schedule_steps`` (None: the floors)."""
    n = schedule_steps or 0
    return (max(LOSS_WINDOW, math.ceil(WINDOW_SHARE * n)),
            max(LOSS_PATIENCE, math.ceil(PATIENCE_SHARE * n)))


def chance_loss(num_labels: int) -> float | None:
    """Cross-entropy of a uniform guess over ``num_labels`` classes (None: not a
    classification task, e.g. regression or generation)."""
    return math.log(num_labels) if num_labels >= 2 else None


@dataclass
class LossCheck:
    """Watches one run's training losses (``add`` after every optimiser step)."""

    warmup_steps: int
    chance: float | None = None
    schedule_steps: int | None = None  # the windows grow with a long schedule (``windows``)
    losses: list[float] = field(default_factory=list)
    passed_at: int | None = None  # the last check step at which the loss had moved

    @cached_property  # read on every step; the schedule does not change
    def window(self) -> int:
        return windows(self.schedule_steps)[0]

    @cached_property
    def first_check(self) -> int:
        return self.warmup_steps + windows(self.schedule_steps)[1]

    def add(self, step: int, loss: float) -> str | None:
        """Record the loss of ``step``; returns why the candidate should stop (not learning
        at a check step), else None."""
        if step < 1 or not math.isfinite(loss):
            return None  # step 0 is a look at the data, not a training step
        self.losses.append(loss)
        if step not in (self.first_check, 2 * self.first_check):
            return None
        if self._recent() < self._threshold() and len(self.losses) >= START_STEPS + self.window:
            self.passed_at = step
            return None
        start, recent = self._start(), self._recent()
        chance = f"chance {self.chance:.3f}, " if self.chance is not None else ""
        first = max(1, step - self.window + 1)
        return (f"not learning: loss {start:.3f} (steps 1-{START_STEPS}) -> {recent:.3f} (steps "
                f"{first}-{step}; {chance}learning needs below {self._threshold():.3f})")

    def moved(self, step: int) -> bool:
        """Has the loss moved off its start? True for good once a check passed; before,
        as of now, and never before the warm-up and one window of losses have passed."""
        if self.passed_at is not None:
            return True
        if step < self.warmup_steps + self.window or len(self.losses) < START_STEPS + self.window:
            return False
        return self._recent() < self._threshold()

    def _start(self) -> float:
        return statistics.fmean(self.losses[:START_STEPS])

    def _recent(self) -> float:
        return statistics.fmean(self.losses[-self.window:])

    def _threshold(self) -> float:
        reference = self._start() if self.chance is None else min(self._start(), self.chance)
        return reference * (1 - LOSS_MARGIN)
