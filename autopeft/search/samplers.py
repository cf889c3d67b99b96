"""The samplers a search may use, by name (optuna is imported only to build one, so the CLI
can list the names without it). One small factory per name, in ``FACTORIES``; each takes
optuna, the seed, and the space's entries by method family (only ``tpe`` uses them)."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Families = Mapping[str, str] | None  # candidate entry -> method family (warmstart.entry_families)


@contextlib.contextmanager
def _experimental(optuna: Any) -> Iterator[None]:
    """Optuna marks some samplers experimental: building one is not the user's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _tpe(optuna: Any, seed: int | None, families: Families = None) -> Any:
    """Recipes, one candidate per family, a Sobol design, then multivariate TPE (grouped: the
    space is conditional) fitted on the highest rung with enough scores, a third of the
    proposals random (``proposals.py``)."""
    from autopeft.search.proposals import RungSampler

    return RungSampler(seed, families)


def _nsga2(optuna: Any, seed: int | None, families: Families = None) -> Any:
    """Small generations: a budget of tens of trials still evolves."""
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _gp(optuna: Any, seed: int | None, families: Families = None) -> Any:
    """Conditional parameters fall back to random sampling (intersection space)."""
    with _experimental(optuna):
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8,
                                         warn_independent_sampling=False)


def _random(optuna: Any, seed: int | None, families: Families = None) -> Any:
    return optuna.samplers.RandomSampler(seed=seed)


# name -> factory (optuna, seed, families) -> sampler; the order is the CLI's.
FACTORIES: dict[str, Callable[[Any, int | None, Families], Any]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "random": _random}
SAMPLERS = tuple(FACTORIES)
DEFAULT_SAMPLER = "tpe"  # reasoned in README "Samplers"; bench/search_efficiency.py --samplers


def make_sampler(name: str, seed: int | None, families: Families = None) -> Any:
    """The sampler named ``name`` (``seed`` None: a fresh random seed, as a worker wants;
    ``families``: the space's entries by method family, for the start-up design)."""
    if name not in FACTORIES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    import optuna

    return FACTORIES[name](optuna, seed, families)
