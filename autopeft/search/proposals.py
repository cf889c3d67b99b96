"""How the default sampler (``tpe``) proposes a candidate: a start-up design first, then a
model that learns from every rung, with a share of random proposals beside it.

In the order a study goes through them (each trial's way is its user attribute
``proposal``):

1. ``recipe``: the warm-start recipes (``warmstart.py`` enqueues them); the parameters a
   recipe does not fix come from the design below (so do those of a queued retry, ``fixed``).
2. ``family``: one candidate per method family of the space (the review's taxonomy: additive,
   partial, reparameterized, hybrid, unified, and the full fine-tuning baseline) that no
   trial has tried yet, so every family is measured once before any model ranks them.
3. ``design``: a space-filling design: point ``trial.number`` of a scrambled Sobol sequence,
   one dimension per parameter name (in the order the study met them), mapped onto each
   distribution (log ranges on a log scale). At least ``design`` of them, and until a rung
   has ``min_points`` scores.
4. ``model``: multivariate TPE (grouped: the space is conditional) fitted on the **highest
   rung with at least ``min_points`` scores**, as BOHB does (Falkner et al. 2018, which
   asks for d+1 points; ``min_points`` = 8 covers the parameters one candidate entry
   draws: the entry, its learning rate and 2-5 method parameters). Every trial that reached
   that rung (complete, pruned, stopped by the budget, or still running) is an observation
   there: the model sees it as a complete trial ranked by its rung score less the median
   of its size band there (``within_band``), with its parameters and memory as constants:
   they are known before training, so as objectives they made a tiny candidate at chance
   "good". Trials that stopped below the rung stay pruned without values: TPE counts them
   among the poor ones, and the rung must hold at least TPE's good set (``good_set``: 10%
   of the trials, at most 25) so that no pruned trial is counted good. So a trial pruned at
   the first rung still teaches the model, and as more trials reach higher rungs the model
   moves up.
5. ``random``: a share ``random_share`` (1/3, as BOHB) of the proposals after the start-up
   are uniformly random, so a wrong model cannot lock the search in. A model proposal that
   would repeat a trial (``near_repeat``: the same entry and method parameters, a learning
   rate within 10%) is replaced by a random one, and the trial records the one it would have
   repeated (``model_repeated``). Why: the same candidate and seed give the same score, so a
   repeat adds nothing. In one 90-minute benchmark search at R = 40 (42 trials of full
   fidelity) the model proposed one candidate (LoRA r=2, alpha 16, on query/value in the upper
   layers: 9,986 parameters) 5 times at learning rates 2.7e-3 to 2.9e-3: 5 full runs for one
   point of the front (0.803-0.814).

**On a short schedule** (``plan.short_schedule``: 300 steps or fewer), every way draws each
learning rate from the top of its range (``short_lr_range``: the top ``SHORT_LR_TOP`` = 40%,
on the range's scale, log for the default space; the model sees lower rates at the bottom).
Why: the ranges hold the papers' rates, tuned for thousands of steps. In the 90-minute
benchmark's 349 proposals (``bench/search_quality.py``: 12 studies at R = 10 and 40, a
162-step schedule of batch 8), counting a candidate as learning when it scored above 0.6 at
a rung: 12 of 161 rates in the lower half of their ranges learned; of the methods that
learned at all, 13 of 59 at 40-60% of the range and 87 of 115 in its top 40%. The lowest
rates that learned: LoRA 9.3e-4 (range 1e-4 to 3e-3), parallel adapter 9e-4, serial adapter
1.9e-3, ProPETL 1.6e-3, (IA)3 8.1e-3 (1e-3 to 3e-2), full fine-tuning 2.6e-5 (1e-5 to 1e-4).
Prompt tuning, prefix tuning, AdaLoRA, UniPELT and Child-Tuning learned at no rate there. The
recipes keep their own rates (``warmstart.py``); the stored trials keep the space's ranges.

Every stream has its own seed derived from the study's (``derive_seed``): the design does not
repeat the ``random`` sampler's draws, and the same seed proposes the same candidates.
Optuna's TPE reads a study through ``_get_trials`` / ``get_trials``, ``directions`` and
``_is_multi_objective`` (optuna 5.1 ``samplers/_tpe/sampler.py``, ``search_space/
group_decomposed.py``); ``RungView`` answers those and hands everything else to the study.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import random
import warnings
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from autopeft.results import CONFIRM_OF, DUPLICATE_OF, PROPOSAL, WARM_START, same_rate
from autopeft.search.plan import Plan, short_schedule
from autopeft.search.pruner import rung_table
from autopeft.space import LR_SUFFIX, lr_param

if TYPE_CHECKING:
    from optuna import Study

RANDOM_SHARE = 1 / 3  # BOHB's share of random proposals
MIN_POINTS = 8  # scores a rung needs before the model is fitted on it
DESIGN = 4  # space-filling proposals after the families, at least
DESIGN_POINTS = 256  # Sobol points (2^8); a study past them wraps around
DESIGN_DIMS = 128  # parameter names the design tells apart (more wrap around)
SHORT_LR_TOP = 0.4  # on a short schedule: the share of each learning-rate range drawn from
MODEL_REPEATED = "model_repeated"  # user attribute: the trial a model proposal would repeat
MODEL_DRAWS = 4  # the model's draws for a proposal that repeats no trial, before a random one


def derive_seed(seed: int | None, stream: str) -> int | None:
    """A seed for one stream of proposals (None stays None: a worker's fresh randomness)."""
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:4], "big")


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """The value at ``u`` in [0, 1) of a distribution: log ranges on a log scale, steps on
    their grid, a choice by its index."""
    u = min(max(u, 0.0), 1.0 - 1e-12)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(u * len(dist.choices))]
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        elif dist.step is not None:
            n = int(round((high - low) / dist.step))
            x = low + min(int(u * (n + 1)), n) * dist.step
        else:
            x = low + u * (high - low)
        x = min(max(x, low), high)
        return int(round(x)) if isinstance(dist, IntDistribution) else x
    raise TypeError(f"unknown distribution {dist!r}")


def short_lr_range(name: str, dist: BaseDistribution) -> BaseDistribution:
    """``dist`` as proposals on a short schedule draw it: a learning rate's top
    ``SHORT_LR_TOP`` (on its own scale: log or linear); any other parameter as it is."""
    if not (name.endswith(LR_SUFFIX) and isinstance(dist, FloatDistribution)
            and dist.step is None):
        return dist
    scale = (math.log, math.exp) if dist.log else (float, float)
    low, high = scale[0](dist.low), scale[0](dist.high)
    return FloatDistribution(scale[1](high - SHORT_LR_TOP * (high - low)), dist.high, log=dist.log)


def studys_short_schedule(study: Study) -> bool:
    """Whether the study's plan (its user attribute ``plan``) has a short schedule."""
    plan = study.user_attrs.get("plan")
    return bool(plan) and short_schedule(Plan.from_dict(plan))


def good_set(n: int) -> int:
    """How many of ``n`` trials TPE counts as good: Optuna's ``default_gamma``,
    min(ceil(0.1 n), 25) (optuna 5 ``samplers/_tpe/sampler.py``)."""
    return min(math.ceil(0.1 * n), 25)


def model_rung(trials: Sequence[FrozenTrial], min_points: int = MIN_POINTS) -> int | None:
    """The highest rung (step) at which at least ``min_points`` trials have a score, and at
    least as many as TPE's good set holds (``good_set`` of the trials it sees). Why: TPE
    fills its good set with the best scored trials, then with unscored (pruned) ones in
    trial-number order: with 100 trials and 8 at a rung, the two recipes pruned early were
    'good'."""
    observed = _observed(trials)
    counts: dict[int, int] = {}
    for t in observed:
        for step in (t.user_attrs.get("rung_scores") or {}):
            counts[int(step)] = counts.get(int(step), 0) + 1
    need = max(min_points, good_set(len(observed)))
    ready = [step for step, n in counts.items() if n >= need]
    return max(ready) if ready else None


def within_band(entries: Sequence[Any]) -> dict[int, float]:
    """Each rung entry's score less the median score of its size band at that rung
    (``results.size_band``: decades of trainable parameters; a band of one is measured
    against every entry): how well a candidate scores *for its size*. Why: parameters and
    memory are known before training, so as objectives a tiny candidate at chance (0.509)
    took one of TPE's two good slots of 20; as a band they say what to compare it with."""
    import statistics

    from autopeft.results import size_band

    bands: dict[int, list[float]] = {}
    for e in entries:
        bands.setdefault(size_band(int(e.trainable_params)), []).append(e.score)
    everyone = statistics.median(e.score for e in entries) if entries else 0.0
    out = {}
    for e in entries:
        band = bands[size_band(int(e.trainable_params))]
        out[e.number] = e.score - (statistics.median(band) if len(band) > 1 else everyone)
    return out


def _observed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that say something about their parameters: not failed, not waiting, not a
    duplicate (its twin speaks for it) and not a refit (its search trial does)."""
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED", "RUNNING")
            and t.user_attrs.get(DUPLICATE_OF) is None and CONFIRM_OF not in t.user_attrs]


def near_repeat(params: Mapping[str, Any], trials: Sequence[FrozenTrial]) -> int | None:
    """The number of a trial that ``params`` would repeat: the same entry, the same
    parameters of its methods, the same learning rate (``results.same_rate``: the front's notion of one
    candidate); None if there is none."""
    entry = params.get("candidate")
    if entry is None:
        return None

    methods = set(entry.split("+"))  # a method's parameters are <method>.<param> (space.py)

    def shape(p: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
        own = {k: v for k, v in p.items()
               if k.partition(".")[0] in methods and not k.endswith(LR_SUFFIX)}
        return own, p.get(lr_param(entry))

    mine, lr = shape(params)
    for t in trials:
        if t.params.get("candidate") != entry:
            continue
        theirs, their_lr = shape(t.params)
        if theirs == mine and lr is not None and their_lr is not None and same_rate(lr, their_lr):
            return t.number
    return None


def rung_view_trials(trials: Sequence[FrozenTrial], step: int,
                     short: bool = False) -> list[FrozenTrial]:
    """The trials as the model sees them at rung ``step`` (see the module docstring); with
    ``short``, learning rates in their short-schedule ranges (a rate below one is seen at its
    bottom: what it says of a rate is that low rates fail)."""
    observed = _observed(trials)
    at_rung = {e.number: e for e in rung_table(observed, step)}
    relative = within_band(list(at_rung.values()))
    out = []
    for t in observed:
        entry = at_rung.get(t.number)
        if entry is None and t.state == TrialState.RUNNING:
            continue  # nothing measured yet
        seen = copy.copy(t)
        seen.intermediate_values = {}
        if short:
            seen.distributions = {n: short_lr_range(n, d) for n, d in t.distributions.items()}
            seen.params = {n: _clip(v, seen.distributions[n]) for n, v in t.params.items()}
        if entry is not None:  # ranked by its score for its size alone: the other two
            seen.state = TrialState.COMPLETE  # objectives are known before training
            seen.values = [relative[entry.number], 0.0, 0.0]
        else:
            seen.state, seen.values = TrialState.PRUNED, None
        out.append(seen)
    return out


def _clip(value: Any, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return min(max(value, dist.low), dist.high)
    return value


class RungView:
    """The study, with its trials as ``rung_view_trials`` makes them: what TPE reads."""

    def __init__(self, study: Study, trials: list[FrozenTrial]):
        self._study = study
        self._view = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [t for t in self._view if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trials(self, deepcopy: bool = True,
                   states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()


class RungSampler(BaseSampler):
    """Start-up design, then TPE on the highest rung with enough points, and a random share.

    ``families`` maps each candidate entry of the space (``lora``, ``lora+bitfit``) to its
    method family, in the order families are tried."""

    def __init__(self, seed: int | None = None, families: Mapping[str, str] | None = None,
                 random_share: float = RANDOM_SHARE, min_points: int = MIN_POINTS,
                 design: int = DESIGN):
        from scipy.stats import qmc

        self._families = dict(families or {})
        self._random_share, self._min_points, self._design = random_share, min_points, design
        with _quiet():
            self._model = TPESampler(multivariate=True, group=True,
                                     seed=derive_seed(seed, "model"), n_startup_trials=0)
        self._random = RandomSampler(seed=derive_seed(seed, "random"))
        self._share_rng = random.Random(derive_seed(seed, "share"))
        self._prior_rng = random.Random(derive_seed(seed, "prior"))  # transfer.rate_prior
        self._points = qmc.Sobol(DESIGN_DIMS, scramble=True, seed=derive_seed(seed, "design")
                                 ).random_base2(int(math.log2(DESIGN_POINTS)))
        self._ways: dict[int, str] = {}  # trial number -> its proposal
        self._views: dict[int, RungView] = {}
        self._short = False  # the study's plan has a short schedule (read at each proposal)
        self._dims: list[str] = []  # parameter names in the order the study met them

    # -- which way a trial is proposed -------------------------------------------------
    def way(self, study: Study, trial: FrozenTrial) -> str:
        """``recipe``, ``family:<entry>``, ``design``, ``model`` or ``random`` (decided once
        per trial, at ``before_trial``, from the trials in the storage then)."""
        if trial.number in self._ways:
            return self._ways[trial.number]
        others = [t for t in study._get_trials(deepcopy=False, use_cache=False)
                  if t.number != trial.number]
        draw = self._share_rng.random()  # one draw per trial, whatever the way
        fixed = trial.system_attrs.get("fixed_params") or {}
        entry = self._family_entry(others, trial)
        if WARM_START in trial.user_attrs:
            way = "recipe"
        elif "candidate" in fixed:
            way = "fixed"  # queued with its candidate (a retry): the design fills the rest
        elif entry is not None:
            way = f"family:{entry}"
        elif (sum(1 for t in others if t.user_attrs.get(PROPOSAL) == "design") < self._design
              or model_rung(others, self._min_points) is None):
            way = "design"
        else:
            way = "random" if draw < self._random_share else "model"
        self._ways[trial.number] = way
        self._short = studys_short_schedule(study)
        study._storage.set_trial_user_attr(trial._trial_id, PROPOSAL, way.split(":")[0])
        return way

    def _family_entry(self, others: list[FrozenTrial], trial: FrozenTrial) -> str | None:
        """An entry of the first family in ``families`` that no other trial has tried (the
        entry within it chosen by the design), else None."""
        tried = set()
        for t in others:
            entry = t.params.get("candidate", (t.system_attrs.get("fixed_params") or {}).get(
                "candidate"))
            if entry in self._families:
                tried.add(self._families[entry])
        for family in dict.fromkeys(self._families.values()):
            if family not in tried:
                entries = [e for e, f in self._families.items() if f == family]
                return entries[int(self._unit(trial.number, "candidate") * len(entries))]
        return None

    def _unit(self, number: int, name: str) -> float:
        """The design's coordinate for parameter ``name`` of trial ``number``."""
        if name not in self._dims:
            self._dims.append(name)
        return float(self._points[number % DESIGN_POINTS, self._dims.index(name) % DESIGN_DIMS])

    def _view(self, study: Study, trial: FrozenTrial) -> RungView:
        if trial.number not in self._views:
            trials = study._get_trials(deepcopy=False, use_cache=False)
            step = model_rung(trials, self._min_points)
            self._views = {trial.number: RungView(study, rung_view_trials(trials, step or 0,
                                                                          self._short))}
        return self._views[trial.number]

    # -- optuna's sampler interface ----------------------------------------------------
    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        for t in sorted(study._get_trials(deepcopy=False, use_cache=False),
                        key=lambda t: t.number):  # the design's dimensions, in the study's order
            for name in sorted(t.distributions):
                self._unit(0, name)
        self.way(study, trial)

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self.way(study, trial) != "model":
            return {}
        return self._model.infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self.way(study, trial) != "model" or not search_space:
            return {}
        others = [t for t in _observed(study._get_trials(deepcopy=False, use_cache=False))
                  if t.number != trial.number]
        for _ in range(MODEL_DRAWS):
            params = self._model.sample_relative(self._view(study, trial), trial, search_space)
            twin = near_repeat(params, others)
            if twin is None:
                return params
        self._ways[trial.number] = "random"  # sample_independent draws every parameter
        study._storage.set_trial_user_attr(trial._trial_id, PROPOSAL, "random")
        study._storage.set_trial_user_attr(trial._trial_id, MODEL_REPEATED, twin)
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        way = self.way(study, trial)
        if self._short:
            param_distribution = short_lr_range(param_name, param_distribution)
        if way == "model":
            return self._model.sample_independent(self._view(study, trial), trial, param_name,
                                                  param_distribution)
        if way == "random":
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        if (way.startswith("family:") and param_name == "candidate"
                and way[len("family:"):] in getattr(param_distribution, "choices", ())):
            return way[len("family:"):]
        if (drawn := self._prior_rate(study, trial, param_name, param_distribution)) is not None:
            return drawn
        return from_unit(param_distribution, self._unit(trial.number, param_name))

    def _prior_rate(self, study: Study, trial: FrozenTrial, name: str,
                    dist: BaseDistribution) -> float | None:
        """A design or family proposal's learning rate drawn from the prior learned across
        studies (``transfer.rate_prior``: earlier tasks' best rates for the entry, weighted by
        how alike the tasks rank the portfolio, fading with the study's own trials of the
        entry), or None: no prior (a study that did not start from a portfolio), or the draw
        left it to the design. The trial records the prior's share (``lr_from_prior``)."""
        from autopeft.search.transfer import LR_PRIOR, PRIOR_SIGMA, first_rung_scores, rate_prior

        if not (name.endswith(LR_SUFFIX) and isinstance(dist, FloatDistribution)
                and dist.step is None):
            return None
        prior = study.user_attrs.get(LR_PRIOR)
        if not prior:
            return None
        entry = name[:-len(LR_SUFFIX)]
        trials = _observed(study._get_trials(deepcopy=False, use_cache=False))
        own = sum(1 for t in trials if t.params.get("candidate") == entry
                  and t.user_attrs.get("rung_scores"))
        share, centres = rate_prior(prior, first_rung_scores(trials, prior.get("members", {})),
                                    entry, own)
        if not centres or self._prior_rng.random() >= share:
            return None
        pick = self._prior_rng.random() * sum(w for _, w in centres)
        centre = centres[-1][0]
        for c, w in centres:  # a task by its weight
            pick -= w
            if pick <= 0:
                centre = c
                break
        study._storage.set_trial_user_attr(trial._trial_id, "lr_from_prior", round(share, 3))
        rate = math.exp(self._prior_rng.gauss(centre, PRIOR_SIGMA))
        return min(max(rate, float(dist.low)), float(dist.high))

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._ways.pop(trial.number, None)
        self._views.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self._model.reseed_rng()
        self._random.reseed_rng()
        self._share_rng.seed()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna marks ``group`` experimental: building the sampler is not the user's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
