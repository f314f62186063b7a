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
@given(
    st.integers(1, 4).flatmap(
        lambda k: st.lists(st.lists(st.integers(-1, 5), min_size=k, max_size=k), min_size=1, max_size=9)
    )
)
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


# --------------------------------------------------------------------- fronts, crowding, counts, contributions

from parrot_t2i.pareto import crowding_distance, dominance_counts, front_ranks, hypervolume_contributions  # noqa: E402

# A, B, C mutually non-dominated; D is dominated by all three; E by everything.
FIVE = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [0.0, 0.0]])


def brute_force_ranks(rewards, groups=None):
    """Peel first fronts off the remaining rows, each with the O(N²) definition above."""
    ranks, remaining, rank = [-1] * len(rewards), [i for i in range(len(rewards)) if np.isfinite(rewards[i]).all()], 0
    while remaining:
        sub = rewards[remaining]
        front = brute_force_front(sub, None if groups is None else groups[remaining])
        for i, keep in zip(list(remaining), front):
            if keep:
                ranks[i] = rank
        remaining = [i for i, keep in zip(remaining, front) if not keep]
        rank += 1
    return ranks


@settings(max_examples=200, deadline=None)
@given(matrices, st.integers(1, 3))
def test_front_ranks_and_dominance_counts_match_brute_force(rows, num_groups):
    rewards = np.array(rows, dtype=np.float64)
    groups = np.arange(len(rows)) % num_groups
    assert front_ranks(torch.tensor(rewards)).tolist() == brute_force_ranks(rewards)
    assert front_ranks(torch.tensor(rewards), torch.tensor(groups)).tolist() == brute_force_ranks(rewards, groups)
    n = len(rows)
    beats = [
        [groups[a] == groups[b] and all(rewards[a] >= rewards[b]) and any(rewards[a] > rewards[b]) for b in range(n)]
        for a in range(n)
    ]
    expected = [sum(beats[i]) - sum(beats[j][i] for j in range(n)) for i in range(n)]
    assert dominance_counts(torch.tensor(rewards), torch.tensor(groups)).tolist() == expected


def test_front_ranks_crowding_and_counts_by_hand():
    ranks = front_ranks(FIVE)
    assert ranks.tolist() == [0, 0, 0, 1, 2]
    # Front 0 sorted by reward 1 is B(1), C(2), A(3): C's gap (3 − 1) / span 2 = 1, and the same
    # along reward 2, so C = 2; the extremes A, B and the one-row fronts D, E are infinite.
    crowd = crowding_distance(FIVE, ranks)
    assert crowd.tolist() == [float("inf"), float("inf"), 2.0, float("inf"), float("inf")]
    # A, B, C each dominate D and E; D dominates E and is dominated by three; E by four.
    assert dominance_counts(FIVE).tolist() == [2, 2, 2, -2, -4]
    # In two groups {A, D} and {B, C, E}, D only meets A and C only meets B and E.
    groups = torch.tensor([0, 1, 1, 0, 1])
    assert front_ranks(FIVE, groups).tolist() == [0, 0, 0, 1, 1]
    assert dominance_counts(FIVE, groups).tolist() == [1, 1, 1, -1, -2]
    nan = torch.tensor([[float("nan"), 1.0], [1.0, 1.0]])
    assert front_ranks(nan).tolist() == [-1, 0] and dominance_counts(nan).tolist() == [0, 0]


def test_hypervolume_contributions_by_hand():
    # FIVE scaled to [0, 1] per reward, reference −0.1: A = (1, 1/3), B = (1/3, 1), C = (2/3, 2/3).
    # Only A covers x in (2/3, 1], up to y = 1/3: (1/3)·(1/3 + 0.1) = 13/90; B the same by symmetry;
    # C alone covers the square (1/3, 2/3]²: 1/9. D and E are dominated: 0.
    scaled = (FIVE.numpy() - 0.0) / 3.0
    got = hypervolume_contributions(scaled, np.full(2, -0.1))
    np.testing.assert_allclose(got, [13 / 90, 13 / 90, 1 / 9, 0.0, 0.0], atol=1e-12)
    # A duplicate contributes nothing exclusively; a lone point contributes its whole box.
    np.testing.assert_allclose(hypervolume_contributions(np.array([[1.0, 1.0], [1.0, 1.0]]), np.zeros(2)), [0.0, 0.0])
    np.testing.assert_allclose(hypervolume_contributions(np.array([[2.0, 3.0]]), np.zeros(2)), [6.0])


def test_per_prompt_hypervolume_and_quantile_reference_by_hand():
    from parrot_t2i.pareto import lower_quantile_reference, per_prompt_hypervolume

    scores = np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    prompts = ["a", "a", "b", "b"]
    # Prompt a: the staircase (1,3), (3,1) above the origin = 3 + 3 − 1 = 5; prompt b: 2·2 = 4.
    assert per_prompt_hypervolume(scores, prompts, np.zeros(2)) == 4.5
    # Pooled, the four images dominate 3 + 3 − 1 + (the square (1,2]² gained by (2,2)) = 6:
    # pooling hides that a covers no centre.
    assert hypervolume(scores, np.zeros(2)) == 6.0
    np.testing.assert_allclose(lower_quantile_reference(scores, 0.5), [2.0, 2.0])
