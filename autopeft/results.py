"""One read model of a study's results: an Optuna trial becomes a typed ``Record``, and the
front is computed from records. ``show``, the report, ``export --pick``, the refit and the
hypervolume all ask this module what a trial's result means, so it is defined once.

* **Objectives**, in order: score (maximise), trainable parameters (minimise), peak training
  memory in bytes (minimise).
* **Feasible**: every constraint value <= 0 (Optuna's rule; ``--max-memory``/``--max-params``).
* **Fidelity** of a record's score:
  ``refit``: a trial the refit added (user attr ``confirm_of`` names the search trial it
  re-trains at the refit's fidelity, with one or more seeds; its score is their mean);
  ``search``: a complete search trial, scored at the end of its search fidelity;
  ``provisional``: a trial that stopped before its end (pruned, or the budget ended): its
  score is that of the last rung it reached, its memory the pre-training lower bound.
* **Superseded**: a search trial that a refit trial stands in for.
* **The front**: the non-dominated feasible records among refit records and the complete
  search trials they do not supersede (a member the refit did not reach keeps its search
  score, marked ``search``); if no trial completed (a budget that ended first), among the
  provisional records, marked so everywhere. Scores that differ
  by less than the noise (``score_noise``: the metric's sampling error at the rows scored) are ties, and so is peak memory within
  ``MEMORY_TOLERANCE``, so a cheaper candidate inside the noise of a dearer one replaces it;
  only a result trained at least as long may dominate another (``like_with_like``).
  A front entry is a configuration: candidates that differ only in learning rate and tie
  within the noise (``collapse_repeats``) are one entry that lists its ``repeats`` ("+N
  ties"); ``hidden_best`` says why the best score is not on the front when it is not, and
  ``strict_differences`` why Optuna's strict ``best_trials`` lists trials this front folds
  in or leaves out.

A leaf: no optuna, no torch imports; trials are read through their attributes only.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: optuna stays a lazy import
    from optuna.trial import FrozenTrial


DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("score", "trainable_params", "peak_memory_bytes")
# Ties come from the number of rows a score is computed on (``sampling_noise``): a constant
# measured on one task could not hold elsewhere (the 0.028 at rungs / 0.006 at the front
# measured on MiniLM / SST-2 made every difference real on CoLA or STS-B, whose metrics had
# none). Studies written before this keep the noise they stored.
PROPORTIONS = ("accuracy", "f1_accuracy")  # a proportion of rows (F1 taken as one, roughly)
CORRELATIONS = ("matthews", "pearson_spearman")  # a correlation over rows (MCC: the phi coefficient)

# Trial user attributes whose meaning the search's own decisions read back too (duplicates,
# rung tables, retried recipes, the cap): one spelling, here. The search writes them.
CANDIDATE = "candidate"  # the Candidate as a dict
RUNG_SCORES = "rung_scores"  # {"step": score} as soon as each rung is scored
RUNG_DECISIONS = "rung_decisions"  # {"step": the pruner's Decision as a dict}
PREDICTED_MEMORY = "predicted_memory_bytes"  # the lower bound, before training
DUPLICATE_OF = "duplicate_of"  # the trial it repeats: not trained again
STOPPED_BY_BUDGET = "stopped_by_budget"
PAUSED = "paused"  # stopped at a rung by the pruner with its checkpoint kept: may be promoted
PROMOTES = "promotes"  # a trial that continues a paused one (its number) once it ranks
FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted"  # the fail reason of a trial ended by Ctrl-C or SIGTERM
WARM_START = "warm_start"  # the recipe's name
CONFIRM_OF = "confirm_of"  # a refit trial: the search trial it re-trains
OVER_CAP = "over_cap"  # a worker's trial past the study's cap, never trained
# A trial told FAIL before training: its candidate was predicted not to fit in the time the
# search phase had left (the reason); the search samples another (``loop.MAX_REFUSED``).
NOT_STARTED = "not_started"
INPUT_TOKENS = "input_tokens"  # virtual tokens its methods put before every row (if any)
# The cost behind a result (``autopeft/checkpoint.py``: runs continue, never restart):
STEPS = "steps"  # the fidelity reached: optimiser steps behind the trial's model
STEPS_TRAINED = "steps_trained"  # optimiser steps this trial ran itself (all its seeds)
CONTINUED_FROM = "continued_from"  # the step of the checkpoint it went on from (0: none)
SCORING_SECONDS = "scoring_seconds"  # of wall_seconds, the time spent scoring
SETUP_SECONDS = "setup_seconds"  # of wall_seconds, before the first step (``TrainResult``)
CONTINUES = "continues_trial"  # queued by a resumed search to continue that cut-short trial
PROPOSAL = "proposal"  # how the sampler proposed it: recipe, family, design, model, random
# Study attribute "checkpoint_dropped:<n>": why trial n's checkpoint was deleted before
# anything read it (the disk cap, ``search/continuation.py``); a finished Optuna trial cannot
# change, so it is said on the study. A paused trial without its checkpoint is never promoted.
CHECKPOINT_DROPPED = "checkpoint_dropped"


def dropped_checkpoints(study_attrs: dict[str, Any]) -> dict[int, str]:
    """{trial number: why its checkpoint is gone} from a study's attributes."""
    prefix = CHECKPOINT_DROPPED + ":"
    return {int(k[len(prefix):]): str(v) for k, v in study_attrs.items() if k.startswith(prefix)}


def size_band(params: float | None) -> int:
    """The decade of a trainable-parameter count: 3 for 1,000-9,999, 4 for 10,000-99,999 (a
    power of ten opens its band), 0 below 10. Exact (digits, not a float logarithm). The
    pruner promotes within bands and the refit spreads over them."""
    n = int(params or 0)
    return len(str(n)) - 1 if n > 0 else 0


def _count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n // size}{unit}"
    return str(n)


def band_label(low: int, high: int | None = None) -> str:
    """Bands ``low``..``high`` as a parameter range: ``band_label(3, 4)`` is ``1K-100K``."""
    return f"{_count(10 ** low)}-{_count(10 ** ((low if high is None else high) + 1))}"


@dataclass
class Record:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    label: str
    candidate: dict[str, Any]
    score: float | None
    trainable_params: int | None
    peak_memory_bytes: int | None
    feasible: bool = True
    fidelity: str = ""  # refit | search | provisional | "" (no score)
    steps: int | None = None  # steps behind the score
    steps_trained: int | None = None  # optimiser steps this trial ran itself (its cost)
    continued_from: int = 0  # the checkpoint's step it continued from
    trainable_fraction: float | None = None
    wall_seconds: float | None = None
    scoring_seconds: float | None = None  # of wall_seconds, scoring (rungs and the end)
    setup_seconds: float | None = None  # of wall_seconds, before the first step
    rung_scores: dict[int, float] = field(default_factory=dict)
    refit_of: int | None = None  # a refit record: the search trial it re-trains
    superseded_by: int | None = None  # a search trial: the refit record standing in for it
    search_score: float | None = None  # a refit record: the search trial's score
    seeds: int | None = None  # runs with several seeds (the refit): how many
    score_mean: float | None = None  # ... their mean (a refit record's score)
    score_std: float | None = None  # ... and their sample standard deviation
    note: str = ""
    repeats: list[int] = field(default_factory=list)  # a front entry: near-identical trials

    @property
    def values(self) -> tuple[float, float, float]:
        return (float(self.score), float(self.trainable_params or 0),
                float(self.peak_memory_bytes or 0))

    @property
    def provisional(self) -> bool:
        return self.fidelity == "provisional"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feasible(trial: FrozenTrial) -> bool:
    """Optuna's rule: every constraint value <= 0 (stored as system attrs ``constraints*``)."""
    for key, value in trial.system_attrs.items():
        if key == "constraints" or key.startswith("constraints:"):
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(v is not None and float(v) > 0 for v in values):
                return False
    return True


def _seeds(attrs: dict[str, Any]) -> tuple[int | None, float | None, float | None]:
    """(runs, mean, sample std) of the scores of several seeds (``confirm_scores``)."""
    scores = attrs.get("confirm_scores")
    if isinstance(scores, (list, tuple)) and scores:
        vals = [float(v) for v in scores]
        return (len(vals), statistics.fmean(vals),
                statistics.stdev(vals) if len(vals) > 1 else 0.0)
    return None, attrs.get("confirm_mean"), attrs.get("confirm_std")


def _note(attrs: dict[str, Any], superseded_by: int | None) -> str:
    if superseded_by is not None:
        return f"re-trained by the refit as trial {superseded_by}"
    if CONFIRM_OF in attrs:
        return f"refit of trial {attrs[CONFIRM_OF]}"
    if attrs.get(DUPLICATE_OF) is not None:
        return f"same candidate as trial {attrs[DUPLICATE_OF]}: not trained again"
    for key in (FAIL_REASON, "prune_reason", "infeasible_reason"):
        if attrs.get(key):
            return str(attrs[key])
    if attrs.get(PROMOTES) is not None:
        return f"promoted: continues paused trial {attrs[PROMOTES]}"
    return ""


def record(trial: FrozenTrial, superseded_by: int | None = None) -> Record:
    """What one trial's result means (see the module docstring)."""
    a = trial.user_attrs
    state = trial.state.name
    rungs = {int(k): float(v) for k, v in (a.get(RUNG_SCORES) or {}).items()}
    r = Record(number=trial.number, state=state, label=a.get("label", "?"),
               candidate=a.get(CANDIDATE, {}), score=None,
               trainable_params=a.get("trainable_params"), peak_memory_bytes=None,
               feasible=feasible(trial), trainable_fraction=a.get("trainable_fraction"),
               wall_seconds=a.get("wall_seconds"), scoring_seconds=a.get(SCORING_SECONDS),
               setup_seconds=a.get(SETUP_SECONDS), rung_scores=rungs,
               superseded_by=superseded_by, note=_note(a, superseded_by),
               steps_trained=a.get(STEPS_TRAINED, a.get(STEPS)),
               continued_from=int(a.get(CONTINUED_FROM) or 0))
    if state == "COMPLETE" and trial.values is not None:
        r.score, params, memory = trial.values
        r.trainable_params, r.peak_memory_bytes = int(params), int(memory)
        r.steps = a.get(STEPS)
        r.seeds, r.score_mean, r.score_std = _seeds(a)
        if CONFIRM_OF in a:
            r.fidelity, r.refit_of = "refit", int(a[CONFIRM_OF])
            r.search_score = a.get("search_score")
            r.steps = a.get("refit_steps", r.steps)
        else:
            r.fidelity = "search"
    elif state == "PRUNED" and rungs and a.get(DUPLICATE_OF) is None:
        last = max(rungs)
        r.score, r.steps, r.fidelity = rungs[last], last, "provisional"
        r.peak_memory_bytes = a.get("peak_memory_bytes") or a.get(PREDICTED_MEMORY)
    return r


def never_trained(attrs: Mapping[str, Any]) -> bool:
    """A trial that was asked and told without training: past the study's cap, or not
    started for want of time. Not a result, nor a failure."""
    return bool(attrs.get(OVER_CAP) or attrs.get(NOT_STARTED))


def records(trials: Iterable[FrozenTrial]) -> list[Record]:
    """Every trial of a study as a record, in trial order. WAITING trials (queued, never
    started) and those never trained (``never_trained``) are left out."""
    trials = [t for t in trials if t.state.name != "WAITING" and not never_trained(t.user_attrs)]
    refit_as = {t.user_attrs[CONFIRM_OF]: t.number for t in trials if CONFIRM_OF in t.user_attrs}
    return [record(t, refit_as.get(t.number)) for t in trials]


def front_pool(recs: Sequence[Record]) -> list[Record]:
    """The records that compete for the front: feasible, with a score, none superseded by
    its refit; refit and complete search records together (a member the refit's budget did
    not reach keeps its search score: nothing good is dropped, and its fidelity says it was
    not re-trained), provisional ones only when nothing completed."""
    scored = [r for r in recs if r.score is not None and r.feasible and r.superseded_by is None
              and r.trainable_params is not None]
    done = [r for r in scored if r.fidelity in ("refit", "search")]
    return done or [r for r in scored if r.provisional]


# Ties on the front treat every objective alike: scores within their noise (``score_noise``),
# peak memory within 5% (a margin chosen, not measured: a 1.5% memory difference must not
# decide where the scores tie), trainable parameters exactly (a deterministic count).
MEMORY_TOLERANCE = 0.05
# Near-identical candidates are one front entry: same methods and structure, same trainable
# parameter count, learning rates within this factor (the sampler's draws 0.029 and 0.030
# are one candidate, not two).
REPEAT_LR_FACTOR = 1.1


def same_rate(a: float, b: float) -> bool:
    """Whether two learning rates are one for near-identical candidates (``REPEAT_LR_FACTOR``)."""
    low, high = sorted((a, b))
    return high <= low * REPEAT_LR_FACTOR if low > 0 else high == low


def _tie_values(r: Record) -> tuple[float, float, float]:
    """A record's objectives with memory on a log scale, so its tolerance is relative."""
    score, params, memory = r.values
    return score, params, math.log1p(max(0.0, memory))


def _tolerance(score_noise: float) -> tuple[float, float, float]:
    return (score_noise, 0.0, math.log1p(MEMORY_TOLERANCE))


def _structure(r: Record) -> tuple[str, str, int]:
    """What makes two records one configuration: everything but the learning rate and seed
    (methods, sizes, placement; a record without its candidate is like no other)."""
    import json

    if not r.candidate:
        return "unknown", str(r.number), 0
    shape = {k: v for k, v in r.candidate.items() if k not in ("learning_rate", "seed")}
    kind = "refit" if r.fidelity == "refit" else "search"  # fidelities are not merged
    return kind, json.dumps(shape, sort_keys=True, default=str), int(r.trainable_params or 0)


def _rate(r: Record) -> float:
    return float(r.candidate.get("learning_rate") or 0)


def _ties(best: Record, other: Record, score_noise: float) -> bool:
    """Whether ``other``, of ``best``'s configuration, is one entry with it: a repeat (the
    same rate, ``same_rate``) or a tie (its score within the noise of ``best``'s and its
    memory within ``MEMORY_TOLERANCE``)."""
    if same_rate(_rate(best), _rate(other)):
        return True
    (bs, _, bm), (os_, _, om) = _tie_values(best), _tie_values(other)
    return bs - os_ <= score_noise and abs(bm - om) <= math.log1p(MEMORY_TOLERANCE)


def collapse_repeats(pool: Sequence[Record], score_noise: float = 0.0) -> list[Record]:
    """One front entry per configuration and tie: records of one configuration (``_structure``:
    they differ only in learning rate and seed) whose scores tie within ``score_noise`` (or
    whose rates are the same, ``same_rate``) are one entry. The best-scoring (then the lowest
    number) stands for it and lists the others in ``repeats`` (``show``: "+N ties"); the
    rest of the configuration forms further entries the same way. In pool order."""
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for r in pool:
        groups.setdefault(_structure(r), []).append(r)
    stand_in: dict[int, Record] = {}
    for members in groups.values():
        left = sorted(members, key=lambda r: (-r.values[0], r.number))
        while left:
            best, rest = left[0], left[1:]
            tied = [r for r in rest if _ties(best, r, score_noise)]
            stand_in[best.number] = replace(best, repeats=sorted(r.number for r in tied))
            left = [r for r in rest if r not in tied]
    return [stand_in[r.number] for r in pool if r.number in stand_in]


def front(recs: Sequence[Record], score_noise: float = 0.0) -> list[Record]:
    """The Pareto front of ``recs`` (see the module docstring), best score first: one entry
    per configuration and tie (``collapse_repeats``), ties within the noise of each
    objective (``score_noise``, ``MEMORY_TOLERANCE``, parameters exact)."""
    from autopeft.pareto import non_dominated_mask  # numpy: `show --help` does without

    pool = collapse_repeats(front_pool(recs), score_noise)
    if not pool:
        return []
    mask = non_dominated_mask([_tie_values(r) for r in pool], DIRECTIONS, _tolerance(score_noise),
                              lambda j, i: like_with_like(pool[j], pool[i]))
    return sorted((r for r, m in zip(pool, mask) if m), key=lambda r: -r.values[0])


def like_with_like(a: Record, b: Record) -> bool:
    """Whether ``a`` may dominate ``b``: only a result trained at least as long. A shorter
    run's score and peak memory are not its full run's: on an unseen pair task a 32-step
    (IA)3 at 0.706 'dominated' the 96-step refit of its kind at 0.708 by memory (537 MiB
    after 32 steps, 795 MiB after 96), and scored 0.683 on the test split."""
    return (a.steps or 0) >= (b.steps or 0)


@dataclass(frozen=True)
class HiddenBest:
    """The best-scoring trial is not on the front: which front entry beats it, and why."""

    number: int
    score: float
    by: int  # the trial that dominates it within the noise
    why: str

    def line(self) -> str:
        return (f"best score {self.score:.4f} (trial {self.number}) is not on the front: "
                f"dominated by trial {self.by} ({self.why})")


def _why(winner: Record, loser: Record, score_noise: float) -> str:
    """Objective by objective, how ``winner`` compares with ``loser``: what lets it dominate
    within the noise (a tie said as a tie, never as an advantage)."""
    (ws, wp, wm), (ls, lp, lm) = winner.values, loser.values
    if ws > ls:
        score = f"higher score ({ws:.4f} vs {ls:.4f})"
    elif ws == ls:
        score = f"same score ({ws:.4f})"
    else:
        score = f"score {ws:.4f} within noise {score_noise:.4f} of {ls:.4f}"
    params = (f"fewer params ({int(wp):,} vs {int(lp):,})" if wp < lp
              else f"same params ({int(wp):,})")
    mib = f"{wm / 2**20:.1f} vs {lm / 2**20:.1f} MiB"
    if wm == lm:
        memory = f"same memory ({wm / 2**20:.1f} MiB)"
    elif wm < lm and lm > wm * (1 + MEMORY_TOLERANCE):
        memory = f"less memory ({mib})"
    else:
        memory = f"{'less' if wm < lm else 'more'} memory but within 5% ({mib})"
    return ", ".join((score, params, memory))


def _dominator(loser: Record, others: Iterable[Record], score_noise: float) -> Record | None:
    """The first of ``others`` that dominates ``loser`` within the noise (None: none does)."""
    from autopeft.pareto import dominates
    import numpy as np

    signs = np.array([-1.0, 1.0, 1.0])
    tol = _tolerance(score_noise)
    for other in others:
        if other.number != loser.number and like_with_like(other, loser) and dominates(
                np.array(_tie_values(other)) * signs, np.array(_tie_values(loser)) * signs, tol):
            return other
    return None


def hidden_best(recs: Sequence[Record], score_noise: float = 0.0) -> HiddenBest | None:
    """Why the best-scoring record of the front's pool is not on the front (None: it is, or
    stands in for repeats that are): the front entry that dominates it within the noise."""
    pool = collapse_repeats(front_pool(recs), score_noise)
    if not pool:
        return None
    on = front(recs, score_noise)
    best = min(pool, key=lambda r: (-r.values[0], r.number))
    if any(best.number == r.number for r in on):
        return None
    other = _dominator(best, [*on, *pool], score_noise)
    return None if other is None else HiddenBest(best.number, best.values[0], other.number,
                                                 _why(other, best, score_noise))


def strict_differences(recs: Sequence[Record], strict: Iterable[int],
                       score_noise: float = 0.0) -> list[str]:
    """Why each of ``strict`` (the trial numbers of Optuna's ``study.best_trials``: exact
    Pareto dominance over complete feasible trials, what optuna-dashboard and ``optuna
    best-trials`` list) that is not an entry of this front is left out: a tie folded into an
    entry, a search trial its refit stands in for, or dominated within the noise."""
    on = front(recs, score_noise)
    pool = front_pool(recs)  # a trial off the front may be dominated by another one off it
    entries = {r.number for r in on}
    tie_of = {n: r.number for r in on for n in r.repeats}
    by_number = {r.number: r for r in recs}
    lines = []
    for n in sorted(set(strict) - entries):
        r = by_number.get(n)
        if r is None or r.score is None:
            continue
        if r.superseded_by is not None:
            why = f"re-trained by the refit as trial {r.superseded_by}, whose score stands for it"
        elif n in tie_of:
            why = (f"a tie of trial {tie_of[n]}: the same configuration at learning rate "
                   f"{_rate(r):.1e}, score {r.values[0]:.4f} within noise {score_noise:.4f}")
        elif (other := _dominator(r, [*on, *pool], score_noise)) is not None:
            why = f"dominated within the noise by trial {other.number} ({_why(other, r, score_noise)})"
        else:
            why = "not a candidate of this front (infeasible or provisional)"
        lines.append(f"trial {n}: {why}")
    return lines


def sampling_noise(metric: str, rows: int | None, score: float | None = None) -> float:
    """The standard error of one ``metric`` score on ``rows`` scored rows: two candidates
    closer than this on those rows are not told apart by them. At ``score`` where it is
    known, else at the least-informed value (an accuracy of 0.5, a correlation of 0), which
    bounds it from above. A proportion p: sqrt(p(1-p)/n) (0.022 at 0.5 on 500 rows, 0.016 at
    0.85); a correlation r: (1-r^2)/sqrt(n) (0.045 at 0 on 500 rows). 0 for metrics with no
    sampling model here (BLEU, loss): their differences all count."""
    if not rows or rows < 2:
        return 0.0
    if metric in PROPORTIONS:
        p = 0.5 if score is None else min(max(score, 0.0), 1.0)
        return math.sqrt(max(p * (1 - p), 1e-4) / rows)
    if metric in CORRELATIONS:
        r = 0.0 if score is None else min(max(abs(score), 0.0), 0.99)
        return (1 - r * r) / math.sqrt(rows)
    return 0.0


def study_noise(metric: str, rung_rows: int | None, final_rows: int) -> dict[str, Any]:
    """The tie noise a study starts with, stored with it: its metric's sampling error at the
    rows scored at intermediate rungs (``rung_rows``: the plan's subset; None: all) and at
    the end (``final_rows``), with the rows so that ``score_noise`` can refine it."""
    rung = min(rung_rows or final_rows, final_rows)
    return {"rung": round(sampling_noise(metric, rung), 4),
            "final": round(sampling_noise(metric, final_rows), 4),
            "metric": metric, "rung_rows": rung, "final_rows": final_rows}


def describe_noise(noise: dict[str, Any]) -> str:
    """One line for the plan: the ties it uses and where they come from."""
    if not noise.get("rung") and not noise.get("final"):
        return f"no tie noise: {noise.get('metric', 'this metric')} has no sampling model"
    kind = "binomial" if noise.get("metric") in PROPORTIONS else "correlation"
    return (f"ties within {noise['rung']:.3f} at rungs, {noise['final']:.3f} at the front: "
            f"{kind} standard error at {noise['rung_rows']} / {noise['final_rows']} rows")


def score_noise(study_attrs: dict[str, Any], recs: Sequence[Record] = ()) -> float:
    """How far apart two final scores must be to differ: the sampling error of the study's
    metric on its validation rows at the best final score it holds (``sampling_noise``;
    before any, at the least-informed value), or, where its refit re-trained members with
    several seeds, the spread it measured (pooled), whichever is larger. A study that
    stored a fixed noise (before ``study_noise``) keeps it."""
    stored = study_attrs.get("noise") or {}
    noise = float(stored.get("final", 0.0))
    scores = [r.score for r in recs if r.fidelity != "provisional" and r.score is not None]
    if stored.get("final_rows") and scores:
        noise = sampling_noise(stored["metric"], stored["final_rows"], max(scores))
    stds = [r.score_std for r in recs if r.fidelity == "refit" and (r.seeds or 0) > 1
            and r.score_std is not None]
    if stds:
        noise = max(noise, math.sqrt(statistics.fmean(s * s for s in stds)))
    return noise


def rank_correlation(recs: Sequence[Record]) -> float | None:
    """Spearman correlation between refit scores and the search scores of the same
    candidates (None below 3 refit records): how well the search fidelity ranked them."""
    pairs = [(r.search_score, r.score) for r in recs
             if r.fidelity == "refit" and r.search_score is not None]
    if len(pairs) < 3:
        return None
    if len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return None  # all tied: no ranking to compare
    from scipy.stats import spearmanr

    return float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
