"""What the report draws, read from a study as it is now (finished or still running):
one ``Point`` per trial, the front, and the hypervolume of the front over time.

No plotting library here, so the numbers are testable on their own.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from autopeft.pareto import hypervolume, non_dominated_mask
from autopeft.report.show import human_bytes, percent, placement, plural, rows
from autopeft.results import feasible, records

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from optuna import Study  # only for annotations: optuna stays a lazy import

STATES = ("complete", "provisional", "pruned", "failed", "infeasible", "running")


@dataclass
class Point:
    number: int
    state: str  # one of STATES
    label: str  # the method combination, e.g. "lora+bitfit": what points are coloured by
    score: float | None = None
    params: int | None = None
    memory: int | None = None
    fraction: float | None = None
    wall_seconds: float | None = None
    on_front: bool = False
    finished_s: float | None = None  # seconds from the study's first trial start
    placement: str = ""
    note: str = ""
    spread: str = ""  # "mean ± std over N seeds" for a confirmed trial
    ties: list[int] = field(default_factory=list)  # a front entry: the trials it stands for

    @property
    def method(self) -> str:
        """The label, with the ties a front entry stands for (``lora +2 ties``) as ``show``."""
        return self.label + (f" +{plural(len(self.ties), 'tie')}" if self.ties else "")

    @property
    def memory_mib(self) -> float | None:
        return None if self.memory is None else self.memory / 2**20

    @property
    def hover(self) -> str:
        """What a mouse-over shows: the trial and its whole candidate."""
        lines = [f"<b>trial {self.number}</b> {self.method}" + (" (front)" if self.on_front else ""),
                 self.placement]
        if self.score is not None:
            lines += [f"score {self.score:.4f}",
                      f"trainable {self.params:,} ({percent(self.fraction)})",
                      f"peak memory {human_bytes(self.memory)}"]
            if self.spread:
                lines.append(self.spread)
        if self.wall_seconds is not None:
            lines.append(f"{self.wall_seconds:.0f}s")
        if self.note:
            lines.append(self.note[:80])
        return "<br>".join(x for x in lines if x)


@dataclass
class ReportData:
    study: str
    task: str = ""
    model: str = ""
    points: list[Point] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    hypervolume: list[tuple[float, float]] = field(default_factory=list)  # (seconds, volume)
    hypervolume_source: str = ""

    @property
    def scored(self) -> list[Point]:
        return [p for p in self.points if p.state in ("complete", "provisional")]

    @property
    def front(self) -> list[Point]:
        return sorted((p for p in self.points if p.on_front), key=lambda p: -(p.score or 0.0))

    @property
    def labels(self) -> list[str]:
        return sorted({p.label for p in self.points if p.score is not None})


def state_of(trial: FrozenTrial) -> str:
    name = trial.state.name
    if name == "COMPLETE":
        return "complete" if feasible(trial) else "infeasible"
    return {"PRUNED": "pruned", "FAIL": "failed"}.get(name, "running")


def collect(study: Study) -> ReportData:
    """Read every trial as it is now. The front is ``show``'s (``autopeft/results.py``): a
    refit trial stands in for the search trial it re-trains; provisional scores (the last
    rung of a trial that did not finish) are drawn only when no trial completed."""
    trials = study.get_trials(deepcopy=False)
    ties = {r.number: r.repeats for r in rows(study)}
    front = set(ties)
    recs = {r.number: r for r in records(trials)}
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    t0 = min(starts) if starts else None
    attrs = study.user_attrs
    data = ReportData(study=study.study_name, task=str(attrs.get("task", "")),
                      model=str(attrs.get("model", "")))
    for t in trials:
        r = recs.get(t.number)
        if r is None:  # queued, never started
            continue
        p = Point(number=t.number, state=state_of(t), label=r.label,
                  placement=placement(r.candidate), note=r.note, on_front=t.number in front,
                  wall_seconds=r.wall_seconds, fraction=r.trainable_fraction,
                  ties=ties.get(t.number, []))
        if r.fidelity == "refit":
            p.spread = (f"refit at {r.steps} steps: {r.score:.4f} ± {r.score_std or 0:.4f} over "
                        f"{r.seeds or '?'} seed(s); search score {r.search_score}")
        if r.score is not None and (r.fidelity != "provisional" or p.on_front):
            p.score, p.params, p.memory = r.values[0], r.trainable_params, r.peak_memory_bytes
            if r.provisional:
                p.state = "provisional"
                p.spread = f"provisional: last rung reached, step {r.steps}"
        if t0 is not None and t.datetime_complete is not None:
            p.finished_s = (t.datetime_complete - t0).total_seconds()
        data.points.append(p)
    data.counts = {s: n for s in STATES
                   if (n := sum(p.state == s for p in data.points)) or s != "provisional"}
    recorded = _recorded_hypervolume(attrs)
    if recorded:
        data.hypervolume, data.hypervolume_source = recorded, "as recorded by the search"
    else:
        data.hypervolume = hypervolume_history([p for p in data.scored
                                                if recs[p.number].superseded_by is None])
        data.hypervolume_source = ("normalised to the ranges seen (score, log10 params, "
                                   "log10 memory) with the reference point at 1.1")
    return data


def _recorded_hypervolume(attrs: dict[str, Any]) -> list[tuple[float, float]]:
    """(seconds since the study started, hypervolume) pairs the search records
    (``autopeft/search/summary.py``), in time order (several workers may append)."""
    value = attrs.get("hypervolume_history")
    if isinstance(value, list) and value and all(
            isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        return sorted((float(a), float(b)) for a, b in value)
    return []


# -- hypervolume ------------------------------------------------------------------------

def normalise(points: Sequence[Point]) -> np.ndarray:
    """Objectives as minimisation in [0, 1] over the observed ranges: 0 is the best seen.
    Parameters and memory span orders of magnitude, so they are compared in log10."""
    raw = np.array([(-p.score, math.log10(max(p.params, 1)), math.log10(max(p.memory, 1)))
                    for p in points], dtype=float).reshape(-1, 3)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (raw - lo) / span


def hypervolume_history(scored: Sequence[Point], ref: float = 1.1) -> list[tuple[float, float]]:
    """For studies without a recorded history: the hypervolume of the running front after
    each completed trial, in completion order. One normalisation (the final ranges seen)
    for the whole curve, so it never goes down."""
    done = sorted((p for p in scored if p.finished_s is not None), key=lambda p: p.finished_s)
    if not done:
        return []
    coords = normalise(done)
    out: list[tuple[float, float]] = []
    front: list[int] = []
    volume = 0.0
    for i, p in enumerate(done):
        candidate = front + [i]
        mask = non_dominated_mask(coords[candidate], ("minimize",) * 3)
        if mask[-1]:  # only a new front member changes the volume
            front = [j for j, m in zip(candidate, mask) if m]
            volume = hypervolume(coords[front], (ref, ref, ref))
        out.append((float(p.finished_s), float(volume)))
    return out
