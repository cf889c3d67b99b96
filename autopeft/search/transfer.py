"""A start-up learned across studies: a meta-store of earlier studies' trials, and a
portfolio of candidates built from it that a fresh study runs first (issue 28, item 5).

**The meta-store** (default ``studies/.meta/``, ``--meta-store DIR``): one JSON file per
study, written atomically (a temporary file renamed over the old one) at the end of every
search, so a crash leaves the previous version or none, never half a file. A study that
resumes rewrites its own file. What it holds (``StudyRecord``): the task (name, metric,
classes, training and validation rows), the model (name, ``model_type``, its family, parameters), the
schedule, and every trial with a score: its candidate, its rung scores with their fraction
of the schedule, its final score and the fraction it was trained to, trainable parameters
(and their share of the model), peak memory and seconds. Plain data: no torch, no optuna.
A store that cannot be written costs one note, never the search.

**The portfolio** (``build_portfolio``), greedy as in Auto-sklearn 2.0 (Feurer et al., JMLR
2022, "portfolio construction"): from each earlier task's trials, a candidate's score is normalised within
the task (the task's median maps to 0, its best to 1, below the median stays 0: the
portfolio should cover the good end, and "better than half" is all a worse candidate
shows), its trainable parameters on a log scale (10x the base model: 0, the fewest any
candidate trained: 1). A set's value on a task is the 2-D hypervolume of its members there
(normalised score x log-parameters, reference (0, 0)): the best score counts, and so do the
small candidates that are nearly as good, which is the front the tool reports. The greedy
adds, one at a time, the candidate that most raises the sum of the tasks' values, and stops
at ``k`` or when no candidate adds anything. Its order is the queue's: the first member is
the best single candidate over the tasks (what R = 1 runs).

*Candidates not run on every task* (real studies sample different candidates): a
candidate counts only on the tasks where it ran; elsewhere it covers nothing (the
pessimistic choice: no imputation from neighbours, which a learning rate 2x away can make
wrong). So a candidate measured on more tasks wins where it is as good, and since every
study starts with the portfolio, its members are measured on every later task. Several runs
of one candidate on one task (seeds, studies) count with the mean score at the largest
fraction of the schedule any of them reached; a candidate is its methods, their parameters
and its learning rate (the seed is not part of it). A task whose scores do not spread
(its best within two sampling errors of its median at the rows it scored, e.g. every trial
at the majority class) teaches nothing and is left out.

Where the store has no study of the model's family, BERT-family encoders start from the
shipped portfolio (``portfolios/bert.json``, made by ``bench/portfolio.py`` from the
recorded learning curves of MiniLM on SST-2, CoLA, STS-B and RTE); anything else starts as
before (the recipes, ``warmstart.py``).

Why no library: Syne Tune's ``ZeroShotTransfer`` does the same greedy (by average rank)
but needs every configuration evaluated on every task and Syne Tune's scheduler and
backend around it; its ``BoundingBox`` narrows the space to the best configurations' box,
which for a conditional space of methods would drop whole families; OptunaHub's
``meta_learn_tpe`` is loaded from the network at run time and replaces the sampler, not the
start-up. The greedy is twenty lines here, on the store's plain records.

A study that starts from a portfolio also gets **learning-rate priors** per method entry
(the end of this module, ``rate_prior``; ``proposals.RungSampler`` draws from them).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autopeft.paths import studies_dir
from autopeft.results import RUNG_SCORES, WARM_START, sampling_noise

STORE_VERSION = 1
SPREAD = 2.0  # a task teaches only where its best is this many sampling errors above its median
MAX_PORTFOLIO = 8  # the most a start-up runs: today's recipes and ladder are 6-8 trials
PORTFOLIOS = Path(__file__).resolve().parent / "portfolios"  # shipped, package data
# Encoders trained the BERT way (a [CLS] head on a bidirectional encoder): one family, so
# a portfolio learned on one of them starts the others. Anything else is its own family.
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta",
               "deberta-v2", "mpnet", "camembert", "ernie", "megatron-bert")


def meta_store_dir(asked: str | None = None) -> str:
    """Where studies are remembered: ``asked``, else ``studies/.meta``."""
    return asked or os.path.join(studies_dir(), ".meta")


def model_family(model_type: str | None) -> str:
    """``bert`` for the BERT-like encoders (``BERT_FAMILY``), else the model type itself."""
    kind = (model_type or "unknown").lower()
    return "bert" if kind in BERT_FAMILY else kind


@dataclass
class TrialRecord:
    """One trial as a later study reads it."""

    candidate: dict[str, Any]
    score: float
    fraction: float  # of the schedule, behind ``score``
    fidelity: str = ""  # search | refit | provisional (``results.Record``)
    label: str = ""
    rungs: list[list[float]] = field(default_factory=list)  # [fraction, score]
    trainable_params: int | None = None
    trainable_fraction: float | None = None
    peak_memory_bytes: int | None = None
    seconds: float | None = None


@dataclass
class StudyRecord:
    """One study's trials with what they were trained on."""

    study: str
    task: dict[str, Any]  # name, metric, num_labels, train_rows, eval_rows
    model: dict[str, Any]  # name, model_type, family, params
    schedule_steps: int
    trials: list[TrialRecord]
    source: str = "search"  # search | recorded curves
    written_at: float = 0.0
    version: int = STORE_VERSION

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StudyRecord:
        trials = [TrialRecord(**t) for t in raw.get("trials", [])]
        return cls(**{**raw, "trials": trials})


def trial_records(recs: Iterable[Any], schedule_steps: int) -> list[TrialRecord]:
    """``results.Record``s with a score, as the store keeps them."""
    out = []
    for r in recs:
        if r.score is None or not r.candidate:
            continue
        steps = r.steps or schedule_steps
        candidate = {k: v for k, v in r.candidate.items() if k != "seed"}
        out.append(TrialRecord(
            candidate=candidate, score=float(r.score), fraction=round(steps / schedule_steps, 4),
            fidelity=r.fidelity, label=r.label,
            rungs=[[round(s / schedule_steps, 4), float(v)] for s, v in sorted(r.rung_scores.items())],
            trainable_params=r.trainable_params, trainable_fraction=r.trainable_fraction,
            peak_memory_bytes=r.peak_memory_bytes, seconds=r.wall_seconds))
    return out


def write_study(directory: str | Path, record: StudyRecord) -> str | None:
    """Write ``record`` as ``<directory>/<study>.json`` atomically; returns a note (one line)
    instead of raising when the store cannot be written."""
    record.written_at = record.written_at or time.time()
    target = Path(directory)
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{record.study}.", suffix=".tmp", dir=target)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(record), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target / f"{record.study}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        return (f"meta-store: could not remember this study in {target} ({e.strerror or e}); "
                "the search is unaffected, later studies start without it")
    return None


def load_store(directory: str | Path) -> list[StudyRecord]:
    """Every readable study in the store (a file that is not one is skipped: a crash
    mid-write leaves only a temporary file, and a store may hold other things)."""
    out = []
    folder = Path(directory)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") == STORE_VERSION:
                out.append(StudyRecord.from_dict(raw))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out


# -- the portfolio ----------------------------------------------------------------------------

def candidate_key(candidate: dict[str, Any]) -> str:
    """A candidate's identity across studies: methods, parameters, learning rate (no seed)."""
    return json.dumps({k: v for k, v in candidate.items() if k != "seed"}, sort_keys=True)


@dataclass
class Portfolio:
    """The candidates a start-up runs, in order, and what they were learned from."""

    candidates: list[dict[str, Any]]
    tasks: list[str]
    studies: list[str]
    source: str  # store | default
    gains: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # tasks whose scores did not spread
    # For the learning-rate prior: each member's score on each earlier task it ran on, and
    # each task's best learning rate per entry (where the entry beat the task's median).
    member_scores: list[dict[str, float]] = field(default_factory=list)
    best_lr: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self, k: int | None = None) -> str:
        n = len(self.candidates) if k is None else min(k, len(self.candidates))
        left = (f"; {', '.join(self.skipped)} left out: scores within the noise"
                if self.skipped else "")
        if self.source == "default":
            return (f"start-up: the default BERT-family portfolio, {n} candidate"
                    f"{'s' if n != 1 else ''} (built from recorded curves on "
                    f"{', '.join(self.tasks)}{left})")
        return (f"start-up: portfolio of {n} from {len(self.studies)} earlier stud"
                f"{'ies' if len(self.studies) != 1 else 'y'} ({', '.join(self.tasks)}{left})")


@dataclass
class _Seen:
    candidate: dict[str, Any]
    params: int | None
    runs: list[tuple[float, float]] = field(default_factory=list)  # (fraction, score)

    @property
    def score(self) -> float:
        top = max(f for f, _ in self.runs)
        return statistics.fmean(s for f, s in self.runs if f == top)


def task_scores(studies: Sequence[StudyRecord]) -> dict[str, dict[str, _Seen]]:
    """Task -> candidate key -> what was seen of it (every study on that task together)."""
    table: dict[str, dict[str, _Seen]] = {}
    for st in studies:
        seen = table.setdefault(str(st.task.get("name")), {})
        for t in st.trials:
            key = candidate_key(t.candidate)
            entry = seen.setdefault(key, _Seen(t.candidate, t.trainable_params))
            entry.runs.append((t.fraction, t.score))
            entry.params = entry.params or t.trainable_params
    return table


def hypervolume_2d(points: Iterable[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (both coordinates maximised) above the reference (0, 0)."""
    area, top = 0.0, 0.0
    for s, p in sorted(((s, p) for s, p in points if s > 0 and p > 0), key=lambda x: -x[1]):
        if s > top:
            area += (s - top) * p
            top = s
    return area


def normalised(studies: Sequence[StudyRecord]) -> dict[str, dict[str, tuple[float, float]]]:
    """Task -> candidate key -> (normalised score, normalised log-parameters) (module
    docstring); a task whose best is within ``SPREAD`` sampling errors of its median is left
    out (its differences are noise)."""
    table = task_scores(studies)
    base = max([int(st.model.get("params") or 0) for st in studies] + [1])
    counts = [e.params for seen in table.values() for e in seen.values() if e.params]
    ref = 10.0 * max([base, *counts]) if counts else 10.0 * base
    fewest = min(counts) if counts else 1
    span = math.log(ref / max(fewest, 1)) or 1.0
    out: dict[str, dict[str, tuple[float, float]]] = {}
    described = {str(st.task.get("name")): st.task for st in studies}
    for task, seen in table.items():
        scores = [e.score for e in seen.values()]
        lo, hi = statistics.median(scores), max(scores)
        about = described[task]
        if hi - lo <= max(1e-12, SPREAD * sampling_noise(str(about.get("metric")),
                                                       about.get("eval_rows"), hi)):
            continue
        out[task] = {key: (min(1.0, max(0.0, (e.score - lo) / (hi - lo))),
                           min(1.0, max(0.0, math.log(ref / max(e.params or ref, 1)) / span)))
                     for key, e in seen.items()}
    return out


def greedy(matrix: dict[str, dict[str, tuple[float, float]]], k: int,
           usable: Callable[[str], bool] = lambda key: True) -> list[tuple[str, float]]:
    """Auto-sklearn 2.0's greedy: up to ``k`` candidate keys, each the one that most raises
    the sum over tasks of the hypervolume of the set so far (ties: the higher summed score,
    then the key's order); stops early when nothing adds. Returns (key, gain) in order."""
    keys = sorted({key for seen in matrix.values() for key in seen if usable(key)})
    chosen: list[tuple[str, float]] = []

    def value(members: list[str]) -> float:
        return sum(hypervolume_2d(seen[m] for m in members if m in seen) for seen in matrix.values())

    current = 0.0
    while len(chosen) < k:
        taken = [c for c, _ in chosen]
        best, best_gain, best_tie = None, 0.0, -1.0
        for key in keys:
            if key in taken:
                continue
            gain = value([*taken, key]) - current
            tie = sum(seen[key][0] for seen in matrix.values() if key in seen)
            if gain > best_gain + 1e-12 or (abs(gain - best_gain) <= 1e-12 and gain > 0
                                            and tie > best_tie):
                best, best_gain, best_tie = key, gain, tie
        if best is None:
            break
        chosen.append((best, best_gain))
        current += best_gain
    return chosen


def build_portfolio(studies: Sequence[StudyRecord], k: int = MAX_PORTFOLIO,
                    usable: Callable[[dict[str, Any]], bool] = lambda c: True,
                    source: str = "store") -> Portfolio:
    """The greedy portfolio of ``studies`` (module docstring); ``usable``: whether a
    candidate can run in this study (its entry is in the space)."""
    matrix = normalised(studies)
    cands = {key: e.candidate for seen in task_scores(studies).values() for key, e in seen.items()}
    picked = greedy(matrix, k, lambda key: usable(cands[key]))
    tasks = sorted({str(st.task.get("name")) for st in studies})
    seen = task_scores(studies)
    return Portfolio([cands[key] for key, _ in picked], [t for t in tasks if t in matrix],
                     sorted({st.study for st in studies}), source, [g for _, g in picked],
                     [t for t in tasks if t not in matrix],
                     [{t: seen[t][key].score for t in matrix if key in seen[t]} for key, _ in picked],
                     best_rates(studies, list(matrix)))


def default_portfolio(family: str) -> Portfolio | None:
    """The shipped portfolio of ``family`` (``portfolios/<family>.json``), or None."""
    path = PORTFOLIOS / f"{family}.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Portfolio([c["candidate"] for c in raw["candidates"]], raw["tasks"], [], "default",
                     [c.get("gain", 0.0) for c in raw["candidates"]], raw.get("skipped", []),
                     [c.get("val_scores", {}) for c in raw["candidates"]], raw.get("best_lr", {}))


def portfolio_size(expected_candidates: int | None) -> int:
    """How many portfolio candidates a study runs first: half the candidates its plan
    expects (rounded up), at most ``MAX_PORTFOLIO``. Why: the portfolio is the prior; the
    other half is the study's own evidence (the sampler's family, design and model stages),
    so a task unlike the earlier ones still finds what the portfolio misses. At R = 1 (one
    candidate) that is the portfolio's first member, the best single candidate over the
    earlier tasks; without a plan's estimate (``--n-trials`` alone), the whole portfolio."""
    if not expected_candidates:
        return MAX_PORTFOLIO
    return max(1, min(MAX_PORTFOLIO, math.ceil(expected_candidates / 2)))


def choose_portfolio(directory: str | Path, family: str, k: int,
                     usable: Callable[[dict[str, Any]], bool] = lambda c: True,
                     exclude: str | None = None) -> Portfolio | None:
    """The start-up for a fresh study of a ``family`` model: the greedy portfolio of the
    store's studies of that family (``exclude``: this study's own name), else the shipped
    one for the family, else None (the recipes, as before)."""
    studies = [st for st in load_store(directory)
               if st.model.get("family") == family and st.study != exclude]
    if studies:
        found = build_portfolio(studies, k, usable)
        if found.candidates:
            return found
    shipped = default_portfolio(family)
    if shipped is None:
        return None
    kept = [i for i, c in enumerate(shipped.candidates) if usable(c)][:k]
    if not kept:
        return None
    return Portfolio([shipped.candidates[i] for i in kept], shipped.tasks, [], "default",
                     [shipped.gains[i] for i in kept], shipped.skipped,
                     [shipped.member_scores[i] for i in kept], shipped.best_lr)


# -- the learning-rate prior ------------------------------------------------------------------
# Per method entry, a mixture over the earlier tasks: a log-normal around each task's best
# learning rate for the entry (where it beat the task's median), sigma a factor of 2, each
# task weighted by how alike it turns out to be: the Spearman correlation of this study's
# first-rung scores of the portfolio's members with the same members' scores on that task
# (uniform until 3 members have a score here; a task at or below 0 gets no weight, so a
# dissimilar task passes on nothing). The sampler draws a design or family proposal's rate
# from it with probability PRIOR_N0 / (PRIOR_N0 + the study's own trials of the entry with a
# rung score): the prior fades as the study's evidence grows, and the model's proposals and
# the random share never use it. As Watanabe et al. (2023) weight tasks in meta-learned TPE,
# by similarity; but from the ranks of the candidates every study runs first, which needs no
# meta-features of the data.
LR_PRIOR = "lr_prior"  # study attribute: {"best_lr": {task: {entry: lr}}, "members": {...}}
PRIOR_SIGMA = math.log(2.0)
PRIOR_N0 = 4
MIN_COMMON = 3  # members scored here before the weights depart from uniform


def entry_of(candidate: dict[str, Any]) -> str:
    return "+".join(str(m.get("name")) for m in candidate.get("methods") or [])


def best_rates(studies: Sequence[StudyRecord], tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Task -> entry -> the learning rate of the entry's best candidate there, where that
    beat the task's median (an entry that never learned on a task says nothing of rates)."""
    table = task_scores(studies)
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        seen = list(table.get(task, {}).values())
        if not seen:
            continue
        median = statistics.median(e.score for e in seen)
        best: dict[str, _Seen] = {}
        for e in seen:
            entry = entry_of(e.candidate)
            if e.score > median and (entry not in best or e.score > best[entry].score):
                best[entry] = e
        out[task] = {entry: float(e.candidate["learning_rate"]) for entry, e in best.items()}
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where either is constant."""
    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for m in range(i, j + 1):
                out[order[m]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return sxy / (sx * sy) if sx and sy else 0.0


def task_weights(prior: dict[str, Any], here: dict[str, float]) -> dict[str, float]:
    """Each earlier task's weight: uniform until ``MIN_COMMON`` members have a first-rung
    score ``here`` (member name -> score), then the Spearman correlation of those scores with
    the task's, 0 at or below 0."""
    out = {}
    for task in prior.get("best_lr", {}):
        theirs = {name: s[task] for name, s in prior.get("members", {}).items() if task in s}
        common = [name for name in here if name in theirs]
        if len(common) < MIN_COMMON:
            out[task] = 1.0
        else:
            out[task] = max(0.0, spearman([here[n] for n in common], [theirs[n] for n in common]))
    return out


def rate_prior(prior: dict[str, Any], here: dict[str, float], entry: str,
               own: int) -> tuple[float, list[tuple[float, float]]]:
    """(the probability a proposal of ``entry`` draws its rate from the prior, the mixture's
    (log-rate centre, weight) pairs); (0, []) where no similar task knows the entry."""
    weights = task_weights(prior, here)
    centres = [(math.log(rates[entry]), weights[task])
               for task, rates in prior.get("best_lr", {}).items()
               if entry in rates and weights.get(task, 0.0) > 0]
    if not centres:
        return 0.0, []
    return PRIOR_N0 / (PRIOR_N0 + own), centres


def first_rung_scores(trials: Iterable[Any], members: Iterable[str]) -> dict[str, float]:
    """Member name -> its score at the first rung it reached in this study (its trials are
    the warm-start trials of that name)."""
    wanted = set(members)
    out: dict[str, float] = {}
    for t in trials:
        name = t.user_attrs.get(WARM_START)
        rungs = t.user_attrs.get(RUNG_SCORES) or {}
        if name in wanted and rungs and name not in out:
            out[name] = float(rungs[min(rungs, key=int)])
    return out
