import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parrot_t2i.pareto import hypervolume, non_dominated


def brute_force_front(rewards, groups=None):
    """The definition, written as the O(N²) loop."""
    n = len(rewards)
    keep = []
    for b in range(n):
        if not all(np.isfinite(rewards[b])):
            keep.append(False)
            continue
        dominated = False
        for a in range(n):
            if a == b or not all(np.isfinite(rewards[a])):
                continue
            if groups is not None and groups[a] != groups[b]:
                continue
            if all(rewards[a] >= rewards[b]) and any(rewards[a] > rewards[b]):
                dominated = True
        keep.append(not dominated)
    return keep


# Small integer grids force ties and exact duplicates to appear often.
matrices = st.integers(1, 4).flatmap(
    lambda k: st.lists(st.lists(st.integers(0, 3), min_size=k, max_size=k), min_size=1, max_size=24)
)


@settings(max_examples=300, deadline=None)
@given(matrices, st.integers(1, 4))
def test_non_dominated_matches_brute_force(rows, num_groups):
    rewards = np.array(rows, dtype=np.float64)
    groups = np.arange(len(rows)) % num_groups
    assert non_dominated(torch.tensor(rewards)).tolist() == brute_force_front(rewards)
    assert non_dominated(torch.tensor(rewards), torch.tensor(groups)).tolist() == brute_force_front(rewards, groups)


def test_duplicates_are_all_kept_and_ties_do_not_dominate():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 1.0], [0.0, 3.0]])
    # The two identical points do not dominate each other; [1,1] is dominated by [1,2] (tie in r1).
    assert non_dominated(rewards).tolist() == [True, True, False, True]


def test_groups_select_independently():
    rewards = torch.tensor([[5.0, 5.0], [1.0, 1.0], [0.0, 0.0], [0.5, -1.0]])
    groups = torch.tensor([0, 0, 1, 1])
    assert non_dominated(rewards).tolist() == [True, False, False, False]
    assert non_dominated(rewards, groups).tolist() == [True, False, True, True]


def test_non_finite_rows_are_excluded_and_dominate_nothing():
    rewards = torch.tensor([[float("nan"), 9.0], [1.0, 1.0], [float("inf"), 0.0], [0.5, 0.5]])
    assert non_dominated(rewards).tolist() == [False, True, False, False]


def brute_force_hypervolume(points, ref):
    """Exact volume on the grid of all point coordinates: sum the cells some point dominates."""
    pts = np.array([p for p in points if all(p > ref)])
    if len(pts) == 0:
        return 0.0
    axes = [np.unique(np.concatenate([[ref[k]], pts[:, k]])) for k in range(len(ref))]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        upper = np.array([axes[k][i + 1] for k, i in enumerate(cell)])
        if (pts >= upper).all(1).any():
            volume += np.prod([axes[k][i + 1] - axes[k][i] for k, i in enumerate(cell)])
    return volume


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.lists(st.lists(st.integers(-1, 5), min_size=k, max_size=k), min_size=1, max_size=9)))
def test_hypervolume_matches_grid_brute_force(rows):
    points = np.array(rows, dtype=np.float64)
    ref = np.zeros(points.shape[1])
    assert hypervolume(points, ref) == pytest.approx(brute_force_hypervolume(points, ref), abs=1e-9)


def test_hypervolume_known_fronts():
    assert hypervolume(torch.tensor([[1.0, 1.0]]), torch.zeros(2)) == 1.0
    # Staircase {(1,3), (2,2), (3,1)} above the origin: 3 + 2 + 1 = 6.
    assert hypervolume(torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), torch.zeros(2)) == 6.0
    # Two unit-overlapping boxes in 3-D: 2·2·2 + 1·1·3 − 1·1·2 = 9.
    assert hypervolume(np.array([[2.0, 2.0, 2.0], [1.0, 1.0, 3.0]]), np.zeros(3)) == 9.0
    # 4-D unit hypercube, and points not above the reference contribute nothing.
    assert hypervolume(np.array([[1.0, 1, 1, 1], [-1.0, 5, 5, 5]]), np.zeros(4)) == 1.0


def test_hypervolume_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        hypervolume(np.ones((3, 2)), np.zeros(3))
