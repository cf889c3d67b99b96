"""The seams of the search, as small protocols (a leaf): what the search needs of a reporter
(progress output) and of a bench (something that trains candidates). ``report/`` implements
reporters, ``runner.Bench`` and ``isolation.IsolatedBench`` are benches; the search depends on
neither, only on these."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import


class Reporter(Protocol):
    """Events of a search, in order: started, then per trial trial_started, step..., rung...,
    and one of trial_finished / trial_pruned / trial_failed; notes at any time; finished."""

    def started(self, study: Study, url: str, budget: Any, n_trials: int | None) -> None: ...
    def trial_started(self, number: int, candidate: Any) -> None: ...
    def step(self, step: int, total: int, loss: float) -> None: ...
    def rung(self, number: int, step: int, score: float) -> None: ...
    def trial_finished(self, study: Study, number: int) -> None: ...
    def trial_pruned(self, number: int, reason: str) -> None: ...
    def trial_failed(self, number: int, reason: str) -> None: ...
    def note(self, text: str) -> None: ...
    def finished(self, study: Study) -> None: ...


class NullReporter(Reporter):
    """Silent: every event does nothing (a new event gets this no-op default too)."""


class Trainer(Protocol):
    """What trains candidates for the search: ``runner.Bench`` in this process, or
    ``isolation.IsolatedBench`` in a child process. ``base``, ``task``, ``train_data``,
    ``eval_data`` and ``settings`` answer the questions asked before training."""

    @property
    def base(self) -> Any: ...
    @property
    def task(self) -> Any: ...
    @property
    def train_data(self) -> Any: ...
    @property
    def eval_data(self) -> Any: ...
    @property
    def settings(self) -> Any: ...

    def run(self, candidate: Any, on_step: Callable[[int, int, float], None] | None = None,
            eval_at: Sequence[int] = (), on_eval: Callable[[int, float], None] | None = None,
            fidelity: Any = None, resume: str | None = None,
            checkpoint: str | None = None) -> Any: ...
    # resume: continue from the checkpoint at this path; checkpoint: keep the run's latest
    # checkpoint at this path (``runner.Bench.run``).
