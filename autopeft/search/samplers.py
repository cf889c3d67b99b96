"""The samplers a search may use, by name (a leaf: optuna is imported only to build one, so
the CLI can list the names without it)."""
from __future__ import annotations

import warnings
from typing import Any

SAMPLERS = ("tpe", "nsga2", "gp", "random")
DEFAULT_SAMPLER = "tpe"  # reasoned in README "Samplers"; bench/search_efficiency.py --samplers


def make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":  # conditional space: multivariate TPE that groups co-occurring params
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed,
                                              n_startup_trials=8)
    if name == "nsga2":  # small generations: a budget of tens of trials still evolves
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "gp":  # conditional parameters fall back to random sampling (intersection space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8,
                                             warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)
