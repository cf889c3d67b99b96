"""Live progress of a search: the trial and its method, a bar for its steps, the budget
left, each result, and the front so far.

Reporters share one interface (``NullReporter``'s methods), called by the search loop:

- ``NullReporter``: silent, the library API's default.
- ``LiveReporter``: a rich panel redrawn in place (interactive terminals).
- ``ConsoleReporter``: plain lines, for a terminal-less stderr (logs, ``nohup``).
- ``JsonLogReporter``: one JSON object per event on stdout (``--json-log``: CI, clusters).
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from rich.markup import escape

from autopeft.protocols import NullReporter  # noqa: F401  (re-exported)
from autopeft.report.show import (console, human_bytes, human_count, nothing_learned,
                                  placement, plural, print_table, rows, table)
from autopeft.results import feasible, never_trained, record

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

# Trial states as a user reads them; "infeasible" is a complete trial that broke a constraint.
STATE_WORDS = ("complete", "pruned", "failed", "infeasible", "running")


def state_counts(study: Study) -> dict[str, int]:
    """How many trials are complete / pruned / failed / infeasible / running right now."""
    counts = dict.fromkeys(STATE_WORDS, 0)
    for t in study.get_trials(deepcopy=False):
        name = t.state.name
        if never_trained(t.user_attrs):  # past the cap, or not started for want of time
            continue
        if name == "COMPLETE":
            counts["complete" if feasible(t) else "infeasible"] += 1
        elif name == "PRUNED":
            counts["pruned"] += 1
        elif name == "FAIL":
            counts["failed"] += 1
        elif name in ("RUNNING", "WAITING"):
            counts["running"] += 1
    return counts


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _ran(study: Study) -> int:
    """Trials that ran before (queued warm-start recipes are not trials yet)."""
    return sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))


def _queued(study: Study) -> int:
    """Trials waiting to run (WAITING: a recipe or a retry not yet run)."""
    return sum(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False))


def _resuming(study: Study) -> str:
    """What a resumed study already holds: the trials that ran and those still queued
    (WAITING: a recipe or a retry not yet run); empty for a study with no trial yet."""
    ran, queued = _ran(study), _queued(study)
    if not ran:  # a new study: its queued warm-start recipes are not a resume
        return ""
    return f" (resuming: {plural(ran, 'trial')} already" + (
        f", {queued} queued)" if queued else ")")


def _result_line(study: Study, number: int) -> str:
    r = record(study.trials[number])
    return (f"trial {number} [cyan]{escape(r.label)}[/] score {r.score:.4f}  "
            f"trainable {human_count(r.trainable_params)}  peak {human_bytes(r.peak_memory_bytes)}  "
            f"{r.wall_seconds or 0:.0f}s")


def _done_line(study: Study) -> str:
    c = state_counts(study)
    return (f"done: {c['complete']} complete, {c['failed']} failed, {c['pruned']} pruned"
            + (f", {c['infeasible']} infeasible" if c["infeasible"] else "")
            + (f"; {empty}" if (empty := nothing_learned(study)) else
               f"; `autopeft show {escape(study.study_name)}` prints the front, "
               f"`autopeft plot {escape(study.study_name)}` draws it"))


class ConsoleReporter(NullReporter):
    """Plain rich lines on stderr (stdout stays clean for ``--json`` users)."""

    def __init__(self, front_rows: int = 5):
        self.console = console(stderr=True)  # a log: no width limit, no column cut
        self.front_rows = front_rows
        self.progress: Any = None
        self.budget: Any = None
        self._trial_task: Any = None
        self._budget_task: Any = None

    def started(self, study: Study, url: str, budget: Any, n_trials: int | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.budget = budget
        self.console.print(f"[bold]study[/] {escape(study.study_name)} at {escape(url)}"
                           + _resuming(study))
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

    def rung(self, number: int, step: int, score: float) -> None:
        self.console.print(f"trial {number} rung at step {step}: score {score:.4f}")

    def trial_finished(self, study: Study, number: int) -> None:
        self.console.print(_result_line(study, number))
        front = rows(study)
        shown = f", the best {self.front_rows} shown" if len(front) > self.front_rows else ""
        print_table(self.console, table(front[: self.front_rows],
                                        f"front so far ({plural(len(front), 'trial')}{shown})"))

    def trial_pruned(self, number: int, reason: str) -> None:
        self.console.print(f"trial {number} [yellow]pruned[/]: {escape(reason)}")

    def trial_failed(self, number: int, reason: str) -> None:
        self.console.print(f"trial {number} [red]failed[/]: {escape(reason)}")

    def note(self, text: str) -> None:
        self.console.print(escape(text))

    def finished(self, study: Study) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.console.print(_done_line(study))


class LiveReporter(NullReporter):
    """One rich panel redrawn in place: the current trial (method, rung, step bar, loss), the
    budget bar with the time left, the trial counts and the top of the front. Results and
    notes scroll above it, so the terminal keeps a log."""

    def __init__(self, front_rows: int = 5, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.front_rows = front_rows
        self.live: Any = None
        self.study: Study = None
        self.budget: Any = None
        self.n_trials: int | None = None
        self.ran = 0
        self.trial: dict[str, Any] = {}
        self.counts = dict.fromkeys(STATE_WORDS, 0)
        self.front: list[Any] = []
        self.front_size = 0

    # -- drawing ------------------------------------------------------------------------
    def render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="bold")
        grid.add_column()
        tr = self.trial
        if tr:
            grid.add_row("trial", Text.assemble(f"{tr['number']} ", (tr["label"], "cyan"), "  ",
                                                (tr["placement"], "dim")))
            bar = Table.grid(padding=(0, 1))
            total = tr.get("total")
            bar.add_row(ProgressBar(total=total, completed=tr.get("step", 0), width=40,
                                    pulse=total is None),
                        f"step {tr.get('step', 0)}/{total or '?'}",
                        "" if tr.get("loss") is None else f"loss {tr['loss']:.4f}")
            grid.add_row("steps", bar)
            if tr.get("rung"):
                grid.add_row("rung", tr["rung"])
        else:
            grid.add_row("trial", "waiting for the next trial")
        if self.budget is not None and self.budget.seconds:
            line = Table.grid(padding=(0, 1))
            line.add_row(ProgressBar(total=self.budget.seconds, completed=self.budget.elapsed(),
                                     width=40),
                         f"{_duration(self.budget.left())} left of {_duration(self.budget.seconds)}")
            grid.add_row("budget", line)
        if self.n_trials:
            line = Table.grid(padding=(0, 1))
            line.add_row(ProgressBar(total=self.n_trials, completed=self.ran, width=40),
                         f"{self.ran}/{self.n_trials} trials this run")
            grid.add_row("trials", line)
        c = self.counts
        grid.add_row("counts", Text.from_markup(
            f"[green]{c['complete']} complete[/]  [yellow]{c['pruned']} pruned[/]  "
            f"[red]{c['failed']} failed[/]" + (f"  {c['infeasible']} infeasible" if c["infeasible"] else "")))
        name = self.study.study_name if self.study else ""
        parts: list[Any] = [Panel(grid, title=Text(f"autopeft search: {name}"), title_align="left")]
        if self.front:
            parts.append(table(self.front, f"front ({plural(self.front_size, 'trial')}, top {len(self.front)} by score)"))
        return Group(*parts)

    def _refresh_counts(self) -> None:
        if self.study is not None:
            self.counts = state_counts(self.study)

    # -- events -------------------------------------------------------------------------
    def started(self, study: Study, url: str, budget: Any, n_trials: int | None) -> None:
        from rich.live import Live

        self.study, self.budget, self.n_trials = study, budget, n_trials
        self.console.print(f"[bold]study[/] {escape(study.study_name)} at {escape(url)}"
                           + _resuming(study))
        self._refresh_counts()
        front = rows(study)
        self.front, self.front_size = front[: self.front_rows], len(front)
        # stdout is left alone: it belongs to --json.
        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=4,
                         redirect_stdout=False)
        self.live.start()

    def trial_started(self, number: int, candidate: Any) -> None:
        self.trial = {"number": number, "label": candidate.label,
                      "placement": placement(candidate.to_dict()), "step": 0, "total": None}

    def step(self, step: int, total: int, loss: float) -> None:
        self.trial.update(step=step, total=total, loss=loss)

    def rung(self, number: int, step: int, score: float) -> None:
        self.trial["rung"] = f"step {step}: score {score:.4f}"

    def _print(self, text: str) -> None:
        self.console.print(text)  # above the panel: the terminal keeps the log

    def trial_finished(self, study: Study, number: int) -> None:
        self.ran += 1
        self.trial = {}
        self._print(_result_line(study, number))
        front = rows(study)
        self.front, self.front_size = front[: self.front_rows], len(front)
        self._refresh_counts()

    def trial_pruned(self, number: int, reason: str) -> None:
        self.ran += 1
        self.trial = {}
        self._print(f"trial {number} [yellow]pruned[/]: {escape(reason)}")
        self._refresh_counts()

    def trial_failed(self, number: int, reason: str) -> None:
        self.ran += 1
        self.trial = {}
        self._print(f"trial {number} [red]failed[/]: {escape(reason)}")
        self._refresh_counts()

    def note(self, text: str) -> None:
        self._print(escape(text))

    def finished(self, study: Study) -> None:
        self._refresh_counts()
        if self.live is not None:
            self.live.stop()
        self.console.print(_done_line(study))


class JsonLogReporter(NullReporter):
    """One JSON object per line, one line per event, flushed at once. Steps are throttled to
    one line per ``step_every`` seconds (plus each trial's last step) to keep logs small.
    Every line has ``event``, ``time`` (Unix seconds) and ``elapsed`` (seconds since start)."""

    def __init__(self, stream: IO[str] | None = None, step_every: float = 10.0):
        self.stream = stream or sys.stdout
        self.step_every = step_every
        self.t0 = time.time()
        self._last_step = 0.0
        self.number: int | None = None
        self.budget: Any = None

    def emit(self, event: str, **fields: Any) -> None:
        now = time.time()
        line = {"event": event, "time": round(now, 3), "elapsed": round(now - self.t0, 3), **fields}
        self.stream.write(json.dumps(line, default=str) + "\n")
        self.stream.flush()

    def started(self, study: Study, url: str, budget: Any, n_trials: int | None) -> None:
        self.budget = budget
        self.emit("started", study=study.study_name, storage=url, budget_seconds=budget.seconds,
                  n_trials=n_trials, existing_trials=_ran(study), queued_trials=_queued(study))

    def trial_started(self, number: int, candidate: Any) -> None:
        self.number = number
        self._last_step = time.time()
        self.emit("trial_started", number=number, label=candidate.label,
                  candidate=candidate.to_dict(), budget_left=self.budget.left() if self.budget else None)

    def step(self, step: int, total: int, loss: float) -> None:
        now = time.time()
        if step >= total or now - self._last_step >= self.step_every:
            self._last_step = now
            self.emit("step", number=self.number, step=step, total=total,
                      loss=loss if math.isfinite(loss) else None)  # step 0: a look at the data

    def rung(self, number: int, step: int, score: float) -> None:
        self.emit("rung", number=number, step=step, score=score)

    def trial_finished(self, study: Study, number: int) -> None:
        r = record(study.trials[number])
        front = rows(study)
        self.emit("trial_finished", number=number, label=r.label, score=r.score,
                  trainable_params=r.trainable_params, peak_memory_bytes=r.peak_memory_bytes,
                  wall_seconds=r.wall_seconds,
                  on_front=any(r.number == number for r in front),
                  front=[r.number for r in front], counts=state_counts(study))

    def trial_pruned(self, number: int, reason: str) -> None:
        self.emit("trial_pruned", number=number, reason=reason)

    def trial_failed(self, number: int, reason: str) -> None:
        self.emit("trial_failed", number=number, reason=reason)

    def note(self, text: str) -> None:
        self.emit("note", text=text)

    def finished(self, study: Study) -> None:
        self.emit("finished", study=study.study_name, counts=state_counts(study),
                  front=[r.to_dict() for r in rows(study)])


def make_reporter(progress: Any) -> Any:
    """``False``/None: silent; ``True``: live panel on a terminal, plain lines otherwise;
    ``"live"``, ``"plain"``, ``"json"``; or any object with the reporter methods."""
    if not progress:
        return NullReporter()
    if progress is True:
        return LiveReporter() if sys.stderr.isatty() else ConsoleReporter()
    if isinstance(progress, str):
        kinds = {"live": LiveReporter, "plain": ConsoleReporter, "json": JsonLogReporter}
        if progress not in kinds:
            from autopeft.errors import UserError

            raise UserError(f"unknown progress kind {progress!r}; use one of {', '.join(kinds)}")
        return kinds[progress]()
    return progress
