"""Non-dominated sorting, crowding distance and hypervolume (a leaf: numpy only).

Shared by the read model (the front, ``results.py``), the study summary and the refit
(hypervolume), so none of them imports another. NSGA-II's order (``selection_keys``: rank,
then crowding distance) was the pruner's until it promoted by score within size bands.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MAXIMIZE, MINIMIZE = "maximize", "minimize"


def _as_minimisation(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    signs = np.array([-1.0 if d == MAXIMIZE else 1.0 for d in directions])
    return arr * signs


Tolerance = Sequence[float] | None  # per objective: differences up to this are ties (noise)


def dominates(a: np.ndarray, b: np.ndarray, tolerance: Tolerance = None) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation).

    With a ``tolerance``, differences within it are ties: ``a`` may be worse by up to the
    tolerance and still count as no worse, and is better only by more than it. So a
    cheaper candidate whose score is inside the noise of a dearer one dominates it."""
    tol = np.zeros(len(a)) if tolerance is None else np.asarray(tolerance, dtype=float)
    return bool(np.all(a <= b + tol) and np.any(a < b - tol))


def non_dominated_mask(values: Sequence[Sequence[float]], directions: Sequence[str],
                       tolerance: Tolerance = None,
                       may_dominate: Callable[[int, int], bool] | None = None) -> np.ndarray:
    """Boolean mask of the points no other point dominates (``may_dominate(j, i)``: whether
    point j may dominate point i at all, e.g. only a score of at least i's fidelity)."""
    pts = _as_minimisation(values, directions)
    n = len(pts)
    tol = np.zeros(pts.shape[1]) if tolerance is None else np.asarray(tolerance, dtype=float)
    # beats[j, i]: point j dominates point i (``dominates``, for every pair at once: a
    # replayed 4-hour study asked this of 305 trials' fronts after each trial, 4.5 million
    # calls one pair at a time)
    a, b = pts[:, None, :], pts[None, :, :]
    beats = np.all(a <= b + tol, axis=2) & np.any(a < b - tol, axis=2)  # never i over i
    if may_dominate is not None:
        beats &= np.array([[may_dominate(j, i) for i in range(n)] for j in range(n)],
                          dtype=bool).reshape(n, n)
    mask = ~beats.any(axis=0)
    if n and not mask.any():  # ties within the tolerance can form a cycle: keep the plain front
        return non_dominated_mask(values, directions, may_dominate=may_dominate)
    return mask


def non_dominated_ranks(values: Sequence[Sequence[float]], directions: Sequence[str],
                        tolerance: Tolerance = None) -> np.ndarray:
    """Front number of each point: 0 for the Pareto front, 1 for the next, and so on."""
    pts = _as_minimisation(values, directions)
    ranks = np.full(len(pts), -1, dtype=int)
    remaining = np.arange(len(pts))
    rank = 0
    while remaining.size:
        sub = non_dominated_mask(pts[remaining], [MINIMIZE] * pts.shape[1], tolerance)
        ranks[remaining[sub]] = rank
        remaining = remaining[~sub]
        rank += 1
    return ranks


def crowding_distance(values: Sequence[Sequence[float]], directions: Sequence[str],
                      tolerance: Tolerance = None) -> np.ndarray:
    """NSGA-II crowding distance of each point *within its own front* (Deb et al. 2002).

    Larger is lonelier; the ends of each objective's range get ``inf`` so a front keeps its
    extremes. Used to break ties between points of the same front rank.
    """
    pts = _as_minimisation(values, directions)
    ranks = (non_dominated_ranks(pts, [MINIMIZE] * pts.shape[1], tolerance) if len(pts)
             else np.array([], int))
    dist = np.zeros(len(pts))
    for rank in set(ranks.tolist()):
        idx = np.flatnonzero(ranks == rank)
        for k in range(pts.shape[1]):
            order = idx[np.argsort(pts[idx, k], kind="stable")]
            lo, hi = pts[order[0], k], pts[order[-1], k]
            dist[order[0]] = dist[order[-1]] = np.inf
            if hi == lo:
                continue
            for prev, mid, nxt in zip(order[:-2], order[1:-1], order[2:]):
                dist[mid] += (pts[nxt, k] - pts[prev, k]) / (hi - lo)
    return dist


def selection_keys(values: Sequence[Sequence[float]], directions: Sequence[str],
                   tolerance: Tolerance = None) -> list[tuple[int, float]]:
    """Sort keys, smaller is better: (front rank, -crowding distance). NSGA-II's order."""
    if not len(values):
        return []
    ranks = non_dominated_ranks(values, directions, tolerance)
    crowd = crowding_distance(values, directions, tolerance)
    return [(int(r), float(-c)) for r, c in zip(ranks, crowd)]


def _hv_2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by 2-D points (minimisation) below ``ref``: one sweep along x."""
    area, best_y = 0.0, ref[1]
    for x, y in sorted(map(tuple, pts)):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (all objectives minimised).

    Exact, by slicing along the last objective down to a 2-D sweep: O(n^(d-1) log n), fine
    for the few hundred points of a study. Points not strictly better than ``reference`` in
    every objective add nothing.
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[non_dominated_mask(pts, [MINIMIZE] * len(ref))]
    if len(ref) == 1:
        return float(ref[0] - pts[:, 0].min())
    if len(ref) == 2:
        return float(_hv_2d(pts, ref))
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    volume = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if top > pts[i, -1]:
            volume += (top - pts[i, -1]) * hypervolume(pts[: i + 1, :-1], ref[:-1])
    return float(volume)
