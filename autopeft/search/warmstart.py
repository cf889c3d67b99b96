"""Warm start: the review's standard recipes run first, so the front is never worse than
what a user would try by hand, and the sampler starts from sensible points.

Recipes (Xu et al. 2023, arXiv 2312.12148, and the methods' own papers), in this order:
LoRA r=8, alpha 16 on query/value at 5e-4; BitFit at 1e-3; (IA)3 on key, value and FFN
output at 3e-3; a serial (Houlsby) adapter, reduction factor 16, at 5e-4; prefix tuning
with 20 virtual tokens at 5e-3; full fine-tuning at 2e-5 (last: the slowest). A recipe is enqueued only if its candidate entry is
in the space, and only through the space's own parameter names (``candidate``,
``<entry>.learning_rate``, ``<method>.<param>``): a value outside a range is clipped to it,
a value that is not among a choice's options is replaced by the nearest number or left to
the sampler. Enqueued trials carry the user attribute ``warm_start`` (the recipe's name);
the pruner lets them finish. A recipe whose trial was interrupted (Ctrl-C, SIGTERM) is
queued again when the search resumes (``requeue_interrupted``).

**When trials stop before full fidelity** (the plan's ``trial_steps`` < ``max_steps``, and
more than one candidate fits: R of about 2 to 10 on MiniLM/SST-2, and the probes below
R = 1) on a schedule that is not short (below), the first recipe is queued at its learning
rate times each of ``LR_LADDER`` right after it, before the other recipes
(``tries_learning_rates``). Why: the recipes' learning
rates come from papers that train for many epochs. On a short schedule, and above all at an
early rung, a recipe at such a rate has not started to learn yet: ranked there it looks
like chance, and the refit never continues it. Measured on MiniLM/SST-2 (3 training subsets
of 4,864 rows, a 152-step schedule), the LoRA recipe at 5e-4, 1e-3, 2e-3 and 4e-3 scored
0.494, 0.722, 0.777 and 0.757 at the rung at step 51 and 0.773, 0.794, 0.813 and 0.818 at
the end (means), while BitFit, (IA)3 and prefix tuning at their recipes scored 0.70-0.74
at the end (``bench/search_quality.py``, arm C+). At R = 10, before the ladder, one
repetition's refit took full fine-tuning and BitFit, and its best at <= 1% parameters was
0.739. The recipe itself stays first: its own rate is what a user would try, and where it
is the best, the search keeps it. Trials that train full fidelity (R = 40) rank the recipe
at its end and leave the rates to the sampler.

**On a short schedule** (``plan.SHORT_SCHEDULE`` steps or fewer: a short budget's data, or a
small training set), every recipe runs at its ``short_rate``, the rate measured best on such
a schedule, and the first recipe at that rate *before* its paper's (so a one-run plan, R
about 1, trains the first recipe at the rate the evidence favours). Why: the papers' rates
are tuned for thousands of steps. Measured on MiniLM/SST-2 with a 162-step schedule (batch
8, ``bench/search_quality.py``; the rates the searches tried, scored at step 162): LoRA 0.59-0.63
at 5e-4 against 0.77-0.84 at 2e-3 to 2.8e-3; BitFit 0.62-0.66 at 1e-3 against 0.74-0.76 at
2e-3 to 1.1e-2; (IA)3 0.58-0.60 at 3e-3 against 0.72-0.78 at 1.3e-2 to 2.5e-2; prefix 0.58-0.61
at 5e-3 against 0.64 at 8e-3; full fine-tuning 0.61-0.69 at 2e-5 against 0.81 at 6e-5 to 1e-4;
the serial adapter 0.77-0.79 at 5e-4 and 0.75-0.78 at 2e-3 (but chance at step 54 at 5e-4,
0.67-0.77 at 2e-3). On a 152-step schedule of batch 32 the LoRA recipe scored 0.773 at 5e-4
and 0.813 at 2e-3. Longer schedules keep the papers' rates (not measured here).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopeft.results import FAIL_REASON, INTERRUPTED, NOT_STARTED, WARM_START
from autopeft.space import Param, Space, lr_param

if TYPE_CHECKING:
    from optuna import Study  # only for annotations: optuna stays a lazy import

    from autopeft.search.plan import Plan


@dataclass(frozen=True)
class Recipe:
    name: str
    entry: str  # the space's candidate entry
    learning_rate: float  # the paper's
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> param -> value
    short_rate: float | None = None  # measured best on a short schedule (module docstring)


LR_LADDER = (4.0, 2.0)  # the first recipe's learning rate times these, right after it


# Cheapest first: in a short budget the small recipes fill the front before full
# fine-tuning (the slowest trial, and the first to predict the time of the next) runs.
RECIPES = (
    Recipe("LoRA r=8 query/value", "lora", 5e-4,
           {"lora": {"r": 8, "alpha": 16, "targets": ["query", "value"], "layers": "all"}}, 2e-3),
    Recipe("BitFit", "bitfit", 1e-3, {"bitfit": {"layers": "all"}}, 4e-3),
    Recipe("(IA)3", "ia3", 3e-3, {"ia3": {"targets": ["key", "value", "ffn_out"], "layers": "all"}},
           1.5e-2),
    Recipe("serial adapter", "adapter", 5e-4,
           {"adapter": {"placement": "houlsby", "reduction_factor": 16, "layers": "all"}}, 2e-3),
    Recipe("prefix tuning", "prefix", 5e-3, {"prefix": {"num_virtual_tokens": 20}}, 8e-3),
    Recipe("full fine-tuning", "full", 2e-5, short_rate=8e-5),
)


def _distance(a: float, b: float) -> float:
    """Ratio distance for positive numbers (ranks 4 and 16 are equally far from 8)."""
    return abs(math.log(a / b)) if a > 0 and b > 0 else abs(a - b)


def _fit(param: Param, value: Any) -> tuple[bool, Any]:
    """``value`` as the stored form of ``param`` (False: leave it to the sampler)."""
    if param.kind == "const":
        return False, None
    if param.kind == "choice":
        plain = all(c is None or isinstance(c, (bool, int, float, str)) for c in param.choices)
        if value in param.choices:
            return True, value if plain else json.dumps(value)
        numbers = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if isinstance(value, (int, float)) and numbers:
            return True, min(numbers, key=lambda c: _distance(c, value))
        return False, None
    low, high = param.low, param.high
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False, None
    clipped = min(max(float(value), low), high)
    if param.step:  # the nearest point of the grid low + k * step that is not above high
        k = min(round((clipped - low) / param.step), math.floor((high - low) / param.step + 1e-9))
        clipped = low + k * param.step
    return True, int(round(clipped)) if param.kind == "int" else clipped


def recipe_params(space: Space, recipe: Recipe, rate: float | None = None) -> dict[str, Any] | None:
    """The fixed parameters that make ``space`` sample ``recipe`` at ``rate`` (default its
    paper's learning rate); None: the recipe's entry is not in the space."""
    return entry_params(space, recipe.entry, rate or recipe.learning_rate, recipe.params)


def candidate_params(space: Space, candidate: dict[str, Any]) -> dict[str, Any] | None:
    """The fixed parameters that make ``space`` sample ``candidate`` (a ``Candidate`` as a
    dict: ``methods`` [{name, params}], ``learning_rate``), clipped to the space as a recipe
    is; None: its entry (its methods joined by ``+``) is not in the space."""
    methods = candidate.get("methods") or []
    entry = "+".join(str(m.get("name")) for m in methods)
    return entry_params(space, entry, candidate.get("learning_rate"),
                        {m.get("name"): m.get("params") or {} for m in methods})


def entry_params(space: Space, entry: str, rate: float | None,
                 params: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The space's own parameter names for ``entry`` at ``rate`` with ``params`` (method ->
    param -> value): a value outside a range is clipped, one not among a choice's options
    becomes the nearest number or is left to the sampler (``_fit``)."""
    if entry not in space.candidates:
        return None
    fixed: dict[str, Any] = {"candidate": entry}
    lr = space.candidates[entry].get("learning_rate", space.learning_rate)
    ok, value = _fit(lr, rate)
    if ok:
        fixed[lr_param(entry)] = value
    for method in entry.split("+"):
        for pname, param in space.methods.get(method, {}).items():
            if pname in params.get(method, {}):
                ok, value = _fit(param, params[method][pname])
                if ok:
                    fixed[f"{method}.{pname}"] = value
    return fixed


def entry_families(space: Space) -> dict[str, str]:
    """Each candidate entry of ``space`` with its method family (the review's taxonomy, as the
    registry files each method; an entry of several methods is ``hybrid``), in the order the
    start-up tries families (``CATEGORIES``), then the space's order."""
    from autopeft.methods.registry import CATEGORIES, get_method

    def family(entry: str) -> str:
        names = entry.split("+")
        return "hybrid" if len(names) > 1 else get_method(names[0]).category

    found = {entry: family(entry) for entry in space.candidates}
    return dict(sorted(found.items(), key=lambda kv: CATEGORIES.index(kv[1])))


def tries_learning_rates(plan: Plan) -> bool:
    """Whether the warm start queues the first recipe's learning-rate ladder (module
    docstring): the plan's trials stop before full fidelity and more than one fits."""
    return (plan.expected_candidates or 0) >= 2 and plan.trial_steps < plan.max_steps


def _rate(value: float) -> str:
    """A learning rate in a trial's name: 2e-03, 1.5e-02 (``.0e`` made 1.5e-2 read 1e-02)."""
    return f"{value:.1e}".replace(".0e", "e")


def recipe_queue(space: Space, lr_ladder: bool = False,
                 short: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The warm start's trials in their order, as (name, fixed parameters): every recipe the
    space can express; with ``short`` (a short schedule) each at its short rate, the first
    one at its paper's rate too, right after (the short rate takes the ladder's place: it is
    the ladder's x4 for LoRA); else with ``lr_ladder`` the first one's learning-rate ladder
    right after it. The first recipe's variants keep every other parameter at its method's
    default; a variant at a rate already queued is left out."""
    queue: list[tuple[str, dict[str, Any]]] = []
    for recipe in RECIPES:
        own = recipe.short_rate if short and recipe.short_rate else recipe.learning_rate
        fixed = recipe_params(space, recipe, own)
        if fixed is None:
            continue
        key = lr_param(recipe.entry)
        ladder = [recipe.learning_rate] if short else [
            recipe.learning_rate * times for times in LR_LADDER] if lr_ladder else []
        if queue or key not in fixed or not ladder:  # one trial, at its own rate
            queue.append((_named(recipe, own), fixed))
            continue
        fixed = {**method_defaults(space, recipe.entry), **fixed}  # variants differ in the rate
        queue.append((_named(recipe, own), fixed))
        lr = space.candidates[recipe.entry].get("learning_rate", space.learning_rate)
        for rate in ladder:
            ok, value = _fit(lr, rate)
            if ok and all(f.get(key) != value for _, f in queue):
                # a variant is named by the rate it trains at; the paper's, clipped or not,
                # by the recipe's name alone (as ``recipe_params`` clips it)
                named = _named(recipe, rate if rate == recipe.learning_rate else value)
                queue.append((named, {**fixed, key: value}))
    return queue


def _named(recipe: Recipe, rate: float) -> str:
    """A warm-start trial's name: the recipe's, with the rate where it is not the paper's."""
    return recipe.name if rate == recipe.learning_rate else f"{recipe.name} at lr {_rate(rate)}"


def method_defaults(space: Space, entry: str) -> dict[str, Any]:
    """The space's parameters of ``entry``'s methods at the methods' own defaults (where the
    space can express them), so that the ladder's trials differ in the learning rate alone
    (a recipe's other parameters otherwise come from the start-up design, trial by trial)."""
    from autopeft.errors import UserError
    from autopeft.methods.registry import make_spec

    fixed: dict[str, Any] = {}
    for method in entry.split("+"):
        try:
            spec = make_spec(method, {})
        except UserError:
            continue
        for pname, param in space.methods.get(method, {}).items():
            if not hasattr(spec, pname):
                continue
            ok, value = _fit(param, getattr(spec, pname))
            if ok:
                fixed[f"{method}.{pname}"] = value
    return fixed


def enqueue_recipes(study: Study, space: Space, lr_ladder: bool = False,
                    short: bool = False) -> list[str]:
    """Enqueue the warm start (``recipe_queue``); returns the names. Call on a fresh study."""
    return enqueue_queue(study, recipe_queue(space, lr_ladder, short))


def portfolio_queue(space: Space, candidates: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], int]]:
    """A portfolio start-up's trials (``transfer.py``) in its order, as (name, fixed
    parameters, the candidate's index): each candidate the space can express, a repeat of
    one already queued (the same parameters once clipped to this space) left out."""
    queue: list[tuple[str, dict[str, Any], int]] = []
    for i, candidate in enumerate(candidates):
        fixed = candidate_params(space, candidate)
        if fixed is None or any(f == fixed for _, f, _ in queue):
            continue
        lr = fixed.get(lr_param(fixed["candidate"]), candidate.get("learning_rate"))
        name = f"portfolio {len(queue) + 1}: {fixed['candidate']}"
        queue.append((f"{name} at lr {_rate(lr)}" if lr else name, fixed, i))
    return queue


def enqueue_queue(study: Study, queue: list[tuple[Any, ...]]) -> list[str]:
    """Enqueue warm-start trials (recipes or a portfolio: (name, fixed parameters, ...)),
    marked ``warm_start`` by name so the pruner lets them finish and an interrupted one is
    retried; returns the names."""
    for name, fixed, *_ in queue:
        study.enqueue_trial(fixed, user_attrs={WARM_START: name}, skip_if_exists=True)
    return [name for name, *_ in queue]


def requeue_interrupted(study: Study) -> list[str]:
    """Queue again every recipe whose last trial was interrupted, or not started for want of
    time (``NOT_STARTED``), and that has no other trial done, running or queued; returns
    their names. Call when a search resumes."""
    latest: dict[str, Any] = {}
    settled = set()
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get(WARM_START)
        if name is None:
            continue
        if t.state.name != "FAIL":
            settled.add(name)
        latest[name] = t
    names = []
    for name, t in latest.items():
        untrained = (t.user_attrs.get(FAIL_REASON) == INTERRUPTED
                     or bool(t.user_attrs.get(NOT_STARTED)))
        if name in settled or not untrained or "fixed_params" not in t.system_attrs:
            continue
        study.enqueue_trial(t.system_attrs["fixed_params"], user_attrs={WARM_START: name},
                            skip_if_exists=False)
        names.append(name)
    return names
