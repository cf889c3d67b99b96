"""Early stopping at rungs: successive halving by score within size bands (our MO-ASHA), or
median score.

Optuna 5 cannot prune multi-objective studies (``trial.report`` raises), so the decision is
ours. A trial trains in stages: rungs at geometric fractions of its steps (eta=3: 1/9, 1/3,
all). At each rung but the last it is scored, and it goes on only if its **score** ranks in
the top 1/eta of the trials of its **size band** at that rung:

* a band is one decade of trainable parameters (``results.size_band``: 1K-10K, 10K-100K,
  ...); bands are walked from the smallest up and a band with fewer than eta trials joins the
  next larger one (the leftover at the top joins the band below), so every group can prune
  and a lone small candidate is compared with the nearest sizes, not waved through;
* within its group exactly ``k = max(1, n // eta)`` trials go on: the top k by score, except
  that scores within the rung noise (``rung_noise``) of the k-th best are ties, and ties go
  to the fewer trainable parameters (then less memory). The noise says the scores cannot
  tell those trials apart, so the other objective decides; a tie never lets more than k go
  on. (Until 12/2026 every tie went on: where scores sit within the noise of each other, as
  they do before training separates them, nothing was stopped; a replayed roberta-like
  4-hour search promoted 97% and 87% at rungs planned for 33% and 11%.) And, as in ASHA,
  at no time have more than k of the group gone past the rung: a trial in the top k whose
  places are taken by earlier arrivals pauses until the table grows (``went_past``).

Why not non-dominated sorting on (score, parameters, memory), as MO-ASHA proper (Schmucker et
al. 2021, arXiv 2106.12639) does: parameters and memory are known before training, and
crowding distance is infinite at the extremes, so the smallest candidate at a rung went on
whatever its score. Here training decides: a small candidate goes on because it scores well
for its size. Memory is not banded: for PEFT it follows the base model and the parameters.

The rung tables are read from the storage (every trial's ``rung_scores`` user attribute,
written as soon as the rung is scored), never from process memory: several workers on one
storage take the same decision from the same trials, whatever order they arrived in. The
decision functions are pure and take hand-made tables. Each pruner is a small object
(``Pruner``: a ``name`` and a ``decide``); ``make_pruner`` builds one by the name the CLI
offers (``PRUNERS``).
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from autopeft.results import (CANDIDATE, CONTINUED_FROM, PREDICTED_MEMORY, RUNG_DECISIONS,
                              RUNG_SCORES, band_label, size_band)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from optuna import Study  # only for annotations: optuna stays a lazy import

MEDIAN_MIN_PEERS = 2  # median-score waits for this many other trials at the rung


def rung_steps(total_steps: int, eta: int = 3, levels: int = 3) -> list[int]:
    """Steps at which a trial is scored: ``total / eta^k`` for k = levels-1 .. 0 (the last is
    the trial's end). Duplicates (very short trials) collapse: 12 steps, eta 3 -> [2, 4, 12].
    The plan's ``ladder`` without its floor (the search uses the plan's rungs)."""
    from autopeft.search.plan import ladder

    return ladder(total_steps, eta, levels, min_rung=1)


@dataclass(frozen=True)
class RungEntry:
    """One trial at one rung: what the pruner compares."""

    number: int
    score: float
    trainable_params: float
    memory_bytes: float
    # the first trial that took up this candidate: what breaks an exact tie. Not ``number``,
    # which a continuation changes: two candidates tied exactly (same score, size, memory)
    # would swap places each time one is continued, and promote each other in turn forever
    first: int = -1
    went_on: bool = False  # it went past this rung already (kept here, promoted, continued)

    @property
    def arrival(self) -> int:
        return self.number if self.first < 0 else self.first

    def objectives(self) -> tuple[float, float, float]:
        return (self.score, self.trainable_params, self.memory_bytes)


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str
    ahead: int = 0  # trials placed before this one (in its group)
    allowed: int = 0  # how many may go on (in its group)
    competitors: int = 0  # trials it was compared with, this one included
    band: str = ""  # the trainable-parameter range of its group, e.g. "1K-100K"
    rank: int = 0  # 1 + ahead: its place in the group (by score, ties to the smaller)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promotion_groups(table: Sequence[RungEntry], eta: int = 3) -> list[list[RungEntry]]:
    """The rung's trials in size groups (see the module docstring), smallest first: decades
    of trainable parameters, a band with fewer than ``eta`` trials merged into the next."""
    by_band: dict[int, list[RungEntry]] = {}
    for e in table:
        by_band.setdefault(size_band(e.trainable_params), []).append(e)
    groups: list[list[RungEntry]] = []
    current: list[RungEntry] = []
    for band in sorted(by_band):
        current += by_band[band]
        if len(current) >= eta:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1] += current
        else:
            groups.append(current)
    return groups


def promotion_order(group: Sequence[RungEntry], allowed: int,
                    score_noise: float = 0.0) -> list[RungEntry]:
    """``group`` in the order promotion takes it (the first ``allowed`` go on): trials beyond
    the noise above the ``allowed``-th best score, by score; then the ties with that score
    (within the noise of it), fewer trainable parameters first, then less memory; then the
    rest by score. A pure function of the table: exact ties go to the candidate that came
    first (``RungEntry.first``), whichever of its trials stands for it now."""
    by_score = sorted(group, key=lambda e: (-e.score, e.trainable_params, e.memory_bytes, e.arrival))
    cut = by_score[min(allowed, len(group)) - 1].score
    sure = [e for e in by_score if e.score > cut + score_noise]
    ties = sorted((e for e in by_score if abs(e.score - cut) <= score_noise),
                  key=lambda e: (e.trainable_params, e.memory_bytes, -e.score, e.arrival))
    rest = [e for e in by_score if e.score < cut - score_noise]
    return sure + ties + rest


def mo_asha(table: Sequence[RungEntry], number: int, eta: int = 3,
            score_noise: float = 0.0) -> Decision:
    """Keep ``number`` if it is among the first ``k = max(1, n // eta)`` of its size group
    (``n`` trials) in ``promotion_order`` (by score, ties within ``score_noise``, the plan's
    noise at this rung, to the smaller) and fewer than k of the group went on already. The
    second condition is ASHA's: at no time have more than 1/eta of a rung's trials gone past
    it (an early arrival on a thin table takes a place; a better one arriving later pauses
    until the table grows, then is promoted), so the plan's eta^-k holds. Without it, every
    trial that led its table on arrival went on: 54% of those at a roberta-like replay's
    second rung, planned 33%. With fewer than eta trials at the rung they form one group."""
    group = next(g for g in promotion_groups(table, eta) if any(e.number == number for e in g))
    allowed = max(1, len(group) // eta)
    order = promotion_order(group, allowed, score_noise)
    place = next(i for i, e in enumerate(order) if e.number == number)
    mine = order[place]
    gone = sum(1 for e in group if e.went_on and e.number != number)
    bands = sorted(size_band(e.trainable_params) for e in group)
    band = band_label(bands[0], bands[-1])
    why = (f"score {mine.score:.4f} ranks {place + 1} of {len(group)} trials with {band} "
           f"trainable parameters (ties within {score_noise:.3f} go to the smaller); "
           f"the top {allowed} go on" + (f", {gone} went on already" if gone else ""))
    return Decision(place < allowed and gone < allowed, why, place, allowed, len(group), band,
                    place + 1)


def median_score(table: Sequence[RungEntry], number: int,
                 min_peers: int = MEDIAN_MIN_PEERS) -> Decision:
    """Keep ``number`` unless its rung score is below the median of the other trials' scores
    at this rung (score alone, like Optuna's MedianPruner); no decision before ``min_peers``."""
    mine = next(e for e in table if e.number == number)
    others = [e.score for e in table if e.number != number]
    if len(others) < min_peers:
        n = len(table)
        return Decision(True, f"only {len(others)} other trial(s) at this rung", 0, n, n)
    median = statistics.median(others)
    keep = mine.score >= median
    why = (f"score {mine.score:.4f} {'>=' if keep else '<'} median {median:.4f} "
           f"of {len(others)} others")
    return Decision(keep, why, sum(1 for s in others if s > mine.score), len(table), len(table))


class Pruner(Protocol):
    """What decides at a rung: keep trial ``number`` going, or stop it (``prunes`` False:
    nothing is decided at rungs, so a trial is scored once, at its end)."""

    name: str
    prunes: bool

    def decide(self, table: Sequence[RungEntry], number: int,
               score_noise: float = 0.0) -> Decision: ...


@dataclass(frozen=True)
class NoPruner:
    name: ClassVar[str] = "none"
    prunes: ClassVar[bool] = False

    def decide(self, table: Sequence[RungEntry], number: int,
               score_noise: float = 0.0) -> Decision:
        return Decision(True, "no pruner")


@dataclass(frozen=True)
class MoAsha:
    eta: int = 3
    name: ClassVar[str] = "mo-asha"
    prunes: ClassVar[bool] = True

    def decide(self, table: Sequence[RungEntry], number: int,
               score_noise: float = 0.0) -> Decision:
        return mo_asha(table, number, self.eta, score_noise)


@dataclass(frozen=True)
class MedianScore:
    min_peers: int = MEDIAN_MIN_PEERS
    name: ClassVar[str] = "median-score"
    prunes: ClassVar[bool] = True

    def decide(self, table: Sequence[RungEntry], number: int,
               score_noise: float = 0.0) -> Decision:
        return median_score(table, number, self.min_peers)  # score alone: no noise, no eta


# name -> factory taking the study's eta; the order is the CLI's.
FACTORIES: dict[str, Callable[[int], Pruner]] = {
    NoPruner.name: lambda eta: NoPruner(),
    MoAsha.name: MoAsha,
    MedianScore.name: lambda eta: MedianScore(),
}
PRUNERS = tuple(FACTORIES)


def make_pruner(name: str, eta: int = 3) -> Pruner:
    if name not in FACTORIES:
        raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    return FACTORIES[name](eta)


def decide(pruner: str, table: Sequence[RungEntry], number: int, eta: int = 3,
           score_noise: float = 0.0) -> Decision:
    """The decision of the pruner named ``pruner``."""
    return make_pruner(pruner, eta).decide(table, number, score_noise)


def rung_table(trials: Iterable[FrozenTrial], step: int) -> list[RungEntry]:
    """Every trial that has a score at ``step`` (running, complete or pruned; not failed),
    read from FrozenTrials' user attributes. A candidate counts once: a trial that continues
    a cut-short one (``search/continuation.py``) carries its rung scores, and the later trial
    stands for both."""
    import json

    out: dict[Any, RungEntry] = {}
    first: dict[Any, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        score = (a.get(RUNG_SCORES) or {}).get(str(step))
        if t.state.name == "FAIL" or score is None or "trainable_params" not in a:
            continue
        memory = a.get(PREDICTED_MEMORY, a.get("peak_memory_bytes", 0))
        key = json.dumps(a[CANDIDATE], sort_keys=True) if CANDIDATE in a else t.number
        first.setdefault(key, t.number)
        out[key] = RungEntry(t.number, float(score), float(a["trainable_params"]), float(memory),
                             first[key], went_past(a, step))
    return list(out.values())


def went_past(attrs: dict[str, Any], step: int) -> bool:
    """A trial (its user attributes) went on past the rung at ``step``: kept there, scored at
    a later rung, or a continuation from a checkpoint at or after it (a promotion)."""
    kept = ((attrs.get(RUNG_DECISIONS) or {}).get(str(step)) or {}).get("keep") is True
    later = any(int(s) > step for s in (attrs.get(RUNG_SCORES) or {}))
    return kept or later or int(attrs.get(CONTINUED_FROM) or 0) >= step


def decide_from_storage(study: Study, pruner: Pruner | str, number: int, step: int, eta: int = 3,
                        score_noise: float = 0.0) -> Decision:
    """The decision for trial ``number`` at ``step``, from the trials in the storage now
    (``pruner``: an object, or a name built with ``eta``)."""
    table = rung_table(study.get_trials(deepcopy=False), step)
    if number not in {e.number for e in table}:
        raise ValueError(f"trial {number} has no score at step {step} in the storage")
    if isinstance(pruner, str):
        pruner = make_pruner(pruner, eta)
    return pruner.decide(table, number, score_noise)
