"""MHS-VM's scan patterns as routes: hand-written visiting orders for small grids, permutation, neighbourhood and
diagonal-order properties on many shapes."""
import itertools

import numpy as np
import pytest

from medmamba.kernels import MHS_PATTERNS, PathRoute, Route, mhs_routes, route_positions

# Row-major index of each step, written out by hand from the paper's Fig. 2 and the official route definitions
# (PixDeep/MHS-VM scanutils.py), for [route 0, route 1] of each pattern; each is also scanned reversed.
HAND_WRITTEN = {
    (2, 3): {
        "C": [[0, 1, 2, 5, 4, 3], [0, 3, 4, 1, 2, 5]],
        "X": [[0, 1, 3, 4, 2, 5], [2, 1, 5, 4, 0, 3]],
        "S": [[0, 1, 2, 5, 4, 3], [3, 4, 5, 2, 1, 0]],
        "Z": [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5]],
    },
    (4, 4): {
        "C": [[0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12],
              [0, 4, 8, 12, 13, 9, 5, 1, 2, 6, 10, 14, 15, 11, 7, 3]],
        "X": [[0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15],
              [3, 2, 7, 11, 6, 1, 0, 5, 10, 15, 14, 9, 4, 8, 13, 12]],
        "S": [[0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 6, 10, 9],
              [12, 13, 14, 15, 11, 7, 3, 2, 1, 0, 4, 8, 9, 10, 6, 5]],
        "Z": [list(range(16)), [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]],
    },
    (3, 5): {
        "C": [[0, 1, 2, 3, 4, 9, 8, 7, 6, 5, 10, 11, 12, 13, 14],
              [0, 5, 10, 11, 6, 1, 2, 7, 12, 13, 8, 3, 4, 9, 14]],
        "X": [[0, 1, 5, 10, 6, 2, 3, 7, 11, 12, 8, 4, 9, 13, 14],
              [4, 3, 9, 14, 8, 2, 1, 7, 13, 12, 6, 0, 5, 11, 10]],
        "S": [[0, 1, 2, 3, 4, 9, 14, 13, 12, 11, 10, 5, 6, 7, 8],
              [10, 11, 12, 13, 14, 9, 4, 3, 2, 1, 0, 5, 6, 7, 8]],
        "Z": [list(range(15)), [0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14]],
    },
    (1, 5): {
        "C": [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]],
        "X": [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]],
        "S": [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]],
        "Z": [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]],
    },
    (2, 2, 3): {
        "C": [[0, 1, 2, 5, 4, 3, 9, 10, 11, 8, 7, 6], [0, 6, 9, 3, 4, 10, 7, 1, 2, 8, 11, 5]],
        "X": [[0, 1, 3, 6, 9, 7, 4, 2, 5, 8, 10, 11], [2, 1, 5, 8, 11, 7, 4, 0, 3, 6, 10, 9]],
        "S": [[0, 1, 2, 5, 4, 3, 9, 10, 11, 8, 7, 6], [3, 4, 5, 2, 1, 0, 6, 7, 8, 11, 10, 9]],
        "Z": [list(range(12)), [0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11]],
    },
}


@pytest.mark.parametrize("spatial,pattern", [(s, p) for s in HAND_WRITTEN for p in MHS_PATTERNS],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_patterns_match_hand_written_orders(spatial, pattern):
    routes = mhs_routes(pattern, len(spatial))
    first, second = HAND_WRITTEN[spatial][pattern]
    expected = [first, first[::-1], second, second[::-1]]
    assert [route_positions(r, spatial).tolist() for r in routes] == expected


SHAPES = [(1, 1), (1, 7), (7, 1), (2, 2), (5, 5), (6, 4), (4, 9), (8, 8), (1, 1, 4), (3, 4, 5), (4, 4, 4), (2, 5, 1)]


def _coords(steps, spatial):
    return np.stack(np.unravel_index(steps, spatial), axis=1)


@pytest.mark.parametrize("spatial", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_route_is_a_permutation(spatial):
    length = int(np.prod(spatial))
    for pattern in MHS_PATTERNS:
        for route in mhs_routes(pattern, len(spatial)):
            steps = route_positions(route, spatial)
            assert sorted(steps.tolist()) == list(range(length)), (pattern, route)


@pytest.mark.parametrize("spatial", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_continuous_and_spiral_routes_step_to_grid_neighbours(spatial):
    for pattern in ("C", "S"):
        for route in mhs_routes(pattern, len(spatial)):
            coords = _coords(route_positions(route, spatial), spatial)
            steps = np.abs(np.diff(coords, axis=0)).sum(axis=1)
            assert np.all(steps == 1), (pattern, route, coords.tolist())


@pytest.mark.parametrize("spatial", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_diagonal_routes_visit_in_order_of_coordinate_sum(spatial):
    forward, _, mirrored, _ = mhs_routes("X", len(spatial))
    coords = _coords(route_positions(forward, spatial), spatial)
    assert np.all(np.diff(coords.sum(axis=1)) >= 0)
    coords = _coords(route_positions(mirrored, spatial), spatial)
    coords[:, -1] = spatial[-1] - 1 - coords[:, -1]
    assert np.all(np.diff(coords.sum(axis=1)) >= 0)
    # consecutive diagonals alternate direction: the first coordinate's trend flips between them
    sums = _coords(route_positions(forward, spatial), spatial).sum(axis=1)
    for k in range(sums.max() + 1):
        first_axis = _coords(route_positions(forward, spatial), spatial)[sums == k, 0]
        assert np.all(np.diff(first_axis) <= 0) if k % 2 == 0 else np.all(np.diff(first_axis) >= 0)


def test_spiral_starts_at_top_left_and_turns_clockwise():
    coords = _coords(route_positions(PathRoute("spiral"), (5, 6)), (5, 6)).tolist()
    assert coords[:7] == [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [1, 5]]  # right along the top, then down
    assert coords[-1] == [2, 3]  # ends in the innermost ring, a single row (2, 2..3)


def test_zigzag_routes_are_axis_order_routes():
    assert mhs_routes("Z", 2) == [Route((0, 1)), Route((0, 1), True), Route((1, 0)), Route((1, 0), True)]
    assert mhs_routes("Z", 3)[2] == Route((2, 1, 0))


def test_bad_pattern_and_bad_path_raise():
    with pytest.raises(ValueError, match="pattern must be one of"):
        mhs_routes("Q", 2)
    with pytest.raises(ValueError, match="not a permutation"):
        route_positions(PathRoute(lambda s: [0] * int(np.prod(s))), (2, 2))


def test_route_positions_are_cached_and_read_only():
    a = route_positions(PathRoute("spiral"), (9, 9))
    assert a is route_positions(PathRoute("spiral"), (9, 9))
    with pytest.raises(ValueError):
        a[0] = 1


def test_callable_path_routes():
    spatial = (3, 4)
    perm = np.random.default_rng(0).permutation(12)
    route = PathRoute(lambda s: perm)
    assert route_positions(route, spatial).tolist() == perm.tolist()
    assert route_positions(route._replace(reverse=True), spatial).tolist() == perm[::-1].tolist()
    # every ordering of a 2x2 grid is accepted
    for order in itertools.permutations(range(4)):
        assert route_positions(PathRoute(lambda s, o=order: o), (2, 2)).tolist() == list(order)
