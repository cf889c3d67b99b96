"""Live progress of a search: the trial and its method, a bar for its steps, the budget
left, each result, and the front so far. ``NullReporter`` is the silent default for the
library API."""
from __future__ import annotations

from typing import Any

from autopeft.report.show import human_bytes, human_count, rows, table


class NullReporter:
    def started(self, study: Any, url: str, budget: Any, n_trials: int | None) -> None: ...
    def trial_started(self, number: int, candidate: Any) -> None: ...
    def step(self, step: int, total: int, loss: float) -> None: ...
    def trial_finished(self, study: Any, number: int) -> None: ...
    def trial_failed(self, number: int, reason: str) -> None: ...
    def note(self, text: str) -> None: ...
    def finished(self, study: Any) -> None: ...


class ConsoleReporter(NullReporter):
    """Rich output on stderr (stdout stays clean for ``--json`` users)."""

    def __init__(self, front_rows: int = 5):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.front_rows = front_rows
        self.progress: Any = None
        self.budget: Any = None
        self._trial_task: Any = None
        self._budget_task: Any = None

    def started(self, study: Any, url: str, budget: Any, n_trials: int | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.budget = budget
        done = len(study.trials)
        self.console.print(f"[bold]study[/] {study.study_name} at {url}"
                           + (f" (resuming: {done} trials already)" if done else ""))
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=self.console, transient=True)
        self.progress.start()
        if budget.seconds:
            self._budget_task = self.progress.add_task("budget", total=int(budget.seconds), info="s")

    def _tick_budget(self) -> None:
        if self._budget_task is not None:
            self.progress.update(self._budget_task, completed=int(self.budget.elapsed()))

    def trial_started(self, number: int, candidate: Any) -> None:
        if self._trial_task is not None:
            self.progress.remove_task(self._trial_task)
        self._trial_task = self.progress.add_task(f"trial {number} {candidate.label}", total=None,
                                                  info="")
        self._tick_budget()

    def step(self, step: int, total: int, loss: float) -> None:
        self.progress.update(self._trial_task, completed=step, total=total, info=f"loss {loss:.4f}")
        self._tick_budget()

    def trial_finished(self, study: Any, number: int) -> None:
        t = study.trials[number]
        score, params, mem = t.values
        self.console.print(f"trial {number} [cyan]{t.user_attrs['label']}[/] score {score:.4f}  "
                           f"trainable {human_count(int(params))}  peak {human_bytes(int(mem))}  "
                           f"{t.user_attrs['wall_seconds']:.0f}s")
        front = rows(study)[: self.front_rows]
        self.console.print(table(front, f"front so far ({len(rows(study))} trials)"))

    def trial_failed(self, number: int, reason: str) -> None:
        self.console.print(f"trial {number} [red]failed[/]: {reason}")

    def note(self, text: str) -> None:
        self.console.print(text)

    def finished(self, study: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
        states = [t.state.name for t in study.trials]
        self.console.print(f"done: {states.count('COMPLETE')} complete, {states.count('FAIL')} "
                           f"failed, {states.count('PRUNED')} pruned; "
                           f"`autopeft show {study.study_name}` prints the front")
