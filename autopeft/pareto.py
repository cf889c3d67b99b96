"""Non-dominated sorting on objective vectors (a leaf: numpy only).

Shared by ``show`` (the front) and, later, by the pruner, so neither imports the other.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAXIMIZE, MINIMIZE = "maximize", "minimize"


def _as_minimisation(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    signs = np.array([-1.0 if d == MAXIMIZE else 1.0 for d in directions])
    return arr * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_mask(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the points no other point dominates."""
    pts = _as_minimisation(values, directions)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and dominates(pts[j], pts[i]):
                mask[i] = False
                break
    return mask


def non_dominated_ranks(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Front number of each point: 0 for the Pareto front, 1 for the next, and so on."""
    pts = _as_minimisation(values, directions)
    ranks = np.full(len(pts), -1, dtype=int)
    remaining = np.arange(len(pts))
    rank = 0
    while remaining.size:
        sub = non_dominated_mask(pts[remaining], [MINIMIZE] * pts.shape[1])
        ranks[remaining[sub]] = rank
        remaining = remaining[~sub]
        rank += 1
    return ranks
