"""The samplers a search may use, by name (a leaf: optuna is imported only to build one, so
the CLI can list the names without it). One small factory per name, in ``FACTORIES``."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def _experimental(optuna: Any) -> Iterator[None]:
    """Optuna marks some samplers experimental: building one is not the user's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _tpe(optuna: Any, seed: int | None) -> Any:
    """Conditional space: multivariate TPE that groups co-occurring params."""
    with _experimental(optuna):
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed,
                                          n_startup_trials=8)


def _nsga2(optuna: Any, seed: int | None) -> Any:
    """Small generations: a budget of tens of trials still evolves."""
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _gp(optuna: Any, seed: int | None) -> Any:
    """Conditional parameters fall back to random sampling (intersection space)."""
    with _experimental(optuna):
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8,
                                         warn_independent_sampling=False)


def _random(optuna: Any, seed: int | None) -> Any:
    return optuna.samplers.RandomSampler(seed=seed)


# name -> factory (optuna, seed) -> sampler; the order is the CLI's.
FACTORIES: dict[str, Callable[[Any, int | None], Any]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "random": _random}
SAMPLERS = tuple(FACTORIES)
DEFAULT_SAMPLER = "tpe"  # reasoned in README "Samplers"; bench/search_efficiency.py --samplers


def make_sampler(name: str, seed: int | None) -> Any:
    """The sampler named ``name`` (``seed`` None: a fresh random seed, as a worker wants)."""
    if name not in FACTORIES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    import optuna

    return FACTORIES[name](optuna, seed)
