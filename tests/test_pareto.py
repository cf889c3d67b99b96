"""Non-dominated sorting, crowding distance and hypervolume on hand-made points."""
from __future__ import annotations

import math

import numpy as np
import pytest

from autopeft.pareto import (crowding_distance, hypervolume, non_dominated_mask,
                             non_dominated_ranks, selection_keys)

MIN2 = ["minimize", "minimize"]
DIRS = ["maximize", "minimize", "minimize"]


def test_ranks_follow_the_fronts() -> None:
    pts = [[1, 5], [2, 3], [3, 2], [5, 1], [4, 4], [5, 5]]
    assert non_dominated_ranks(pts, MIN2).tolist() == [0, 0, 0, 0, 1, 2]
    assert non_dominated_mask(pts, MIN2).tolist() == [True, True, True, True, False, False]


def test_directions_are_respected() -> None:
    # (score max, params min, memory min): b has a higher score for the same cost.
    a, b, c = [0.8, 100, 10], [0.9, 100, 10], [0.7, 10, 10]
    assert non_dominated_mask([a, b, c], DIRS).tolist() == [False, True, True]


def test_equal_points_do_not_dominate_each_other() -> None:
    assert non_dominated_mask([[1, 1], [1, 1]], MIN2).tolist() == [True, True]


def test_crowding_distance_by_hand() -> None:
    pts = [[1, 5], [2, 3], [3, 2], [5, 1], [4, 4]]
    d = crowding_distance(pts, MIN2)
    assert math.isinf(d[0]) and math.isinf(d[3]) and math.isinf(d[4])  # ends; alone in front 1
    # point (2,3): x neighbours 1 and 3 over range 4 -> 0.5; y neighbours 5 and 2 over 4 -> 0.75
    assert d[1] == pytest.approx(1.25) and d[2] == pytest.approx(1.25)


def test_selection_keys_rank_first_then_crowding() -> None:
    pts = [[0, 10], [1, 6], [2, 5], [9, 0], [3, 3], [10, 10]]
    keys = selection_keys(pts, MIN2)
    order = sorted(range(len(pts)), key=lambda i: keys[i])
    assert order[-1] == 5  # the only dominated point is last
    assert set(order[:2]) == {0, 3}  # the ends of the front (infinite crowding) come first
    assert keys.index(min(keys[1], keys[2], keys[4])) == 4  # the loneliest interior point


def test_crowding_breaks_a_tie_on_the_front_toward_the_lonelier_point() -> None:
    """(score max, params min, memory min): 0..3 a trade-off front, 4..8 dominated. The
    interior points' crowding by hand, over the front's ranges (score 0.30, params 990):
    1: (0.90 - 0.84) / 0.30 + (1000 - 480) / 990 = 0.7253;
    2: (0.85 - 0.60) / 0.30 + (500 - 10) / 990 = 1.3283. So the top three are 0, 3, 2."""
    pts = [[0.90, 1000, 1000], [0.85, 500, 1000], [0.84, 480, 1000], [0.60, 10, 1000],
           *([0.50, 2000, 1000] for _ in range(5))]
    d = crowding_distance(pts, DIRS)
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(0.06 / 0.30 + 520 / 990) and d[2] == pytest.approx(0.25 / 0.30 + 490 / 990)
    keys = selection_keys(pts, DIRS)
    assert [k[0] for k in keys] == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    top3 = sorted(range(len(pts)), key=lambda i: keys[i])[:3]
    assert set(top3) == {0, 2, 3}


@pytest.mark.parametrize("points, ref, expected", [
    ([[0.5, 0.5]], [1, 1], 0.25),
    ([[0, 0.5], [0.5, 0]], [1, 1], 0.75),
    ([[0.5, 0.5, 0.5]], [1, 1, 1], 0.125),
    ([[0.2, 0.8, 0.5], [0.8, 0.2, 0.5], [0.5, 0.5, 0.1]], [1, 1, 1], 0.285),  # by hand: 0.1 + 0.185
    ([[0.5, 0.5, 0.5], [0.6, 0.6, 0.6]], [1, 1, 1], 0.125),  # a dominated point adds nothing
    ([[1.5, 0.1, 0.1]], [1, 1, 1], 0.0),  # beyond the reference
])
def test_hypervolume_by_hand(points, ref, expected) -> None:
    assert hypervolume(points, ref) == pytest.approx(expected)


def test_hypervolume_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((25, 3))
    samples = rng.random((100_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for p in pts:
        covered |= np.all(samples >= p, axis=1)
    assert hypervolume(pts, [1, 1, 1]) == pytest.approx(covered.mean(), abs=0.01)


def test_the_mask_is_the_pairwise_definition_on_random_fronts() -> None:
    """``non_dominated_mask`` (all pairs at once) against ``dominates`` pair by pair, with a
    tolerance and a like-with-like rule, on random points with many ties."""
    import numpy as np

    from autopeft.pareto import dominates, non_dominated_mask

    rng = np.random.default_rng(0)
    directions = ["maximize", "minimize", "minimize"]
    for trial in range(30):
        n = int(rng.integers(1, 40))
        values = rng.integers(0, 6, size=(n, 3)).astype(float) / 5
        tol = [0.2, 0.0, 0.0] if trial % 2 else None
        level = rng.integers(0, 2, size=n)  # a fidelity: only as long may dominate
        rule = (lambda j, i: level[j] >= level[i]) if trial % 3 else None
        pts = values * np.array([-1.0, 1.0, 1.0])
        want = [not any(j != i and (rule is None or rule(j, i)) and dominates(pts[j], pts[i], tol)
                        for j in range(n)) for i in range(n)]
        if not any(want):  # a cycle of ties: the plain front
            want = [not any(j != i and (rule is None or rule(j, i)) and dominates(pts[j], pts[i])
                            for j in range(n)) for i in range(n)]
        assert non_dominated_mask(values, directions, tol, rule).tolist() == want
