import pytest
import torch

from parrot_t2i.config import ObjectiveConfig
from parrot_t2i.objectives import (
    Objective,
    normalize_rewards,
    parrot_weights,
    policy_gradient_loss,
    weighted_sum_weights,
)

NAMES = ["aesthetic", "preference", "alignment"]
REWARDS = torch.tensor(
    [
        [0.9, 0.2, 0.5],  # group 0: non-dominated
        [0.1, 0.8, 0.5],  # group 0: non-dominated
        [0.1, 0.1, 0.4],  # group 0: dominated by both
        [0.3, 0.3, 0.3],  # group 1: dominated by the next
        [0.4, 0.3, 0.6],  # group 1: non-dominated
        [0.2, 0.9, 0.1],  # group 1: non-dominated
    ]
)
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])
INDEX = torch.tensor([0, 1, 2, 0, 1, 2])  # round-robin identifiers


def test_parrot_eq4_arithmetic_written_out():
    selection = Objective(ObjectiveConfig(reward_normalization="none", name="parrot"), NAMES)(REWARDS, GROUPS, INDEX)
    assert selection.selected.tolist() == [True, True, False, False, True, True]
    # |P| = 4; each selected sample weighted by the reward of its own identifier.
    expected = torch.tensor([0.9, 0.8, 0.0, 0.0, 0.3, 0.1]) / 4
    torch.testing.assert_close(selection.weights, expected)


def test_global_selection_compares_across_prompts():
    selection = Objective(ObjectiveConfig(reward_normalization="none", name="parrot", selection="global"), NAMES)(
        REWARDS, GROUPS, INDEX
    )
    # [0.4,0.3,0.6] is not dominated by anything in group 0 either; [0.3,0.3,0.3] still is.
    assert selection.selected.tolist() == [True, True, False, False, True, True]
    selection = Objective(ObjectiveConfig(reward_normalization="none", name="parrot", selection="global"), ["a"])(
        torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([0, 0])
    )
    assert selection.selected.tolist() == [False, True]


def test_weighted_sum_and_single():
    ws = Objective(ObjectiveConfig(reward_normalization="none", name="weighted_sum", weights=[0.5, 0.25, 0.25]), NAMES)(
        REWARDS, GROUPS, INDEX
    )
    expected = (REWARDS @ torch.tensor([0.5, 0.25, 0.25])) / 6
    torch.testing.assert_close(ws.weights, expected)
    assert ws.selected.all()
    equal = Objective(ObjectiveConfig(reward_normalization="none", name="weighted_sum"), NAMES)(REWARDS, GROUPS, INDEX)
    torch.testing.assert_close(equal.weights, REWARDS.mean(1) / 6)
    single = Objective(ObjectiveConfig(reward_normalization="none", name="single", reward="preference"), NAMES)(
        REWARDS, GROUPS, INDEX
    )
    torch.testing.assert_close(single.weights, REWARDS[:, 1] / 6)


def test_pure_functions_directly():
    selected = torch.tensor([True, False])
    torch.testing.assert_close(
        parrot_weights(torch.tensor([[2.0, 3.0], [5.0, 7.0]]), torch.tensor([1, 0]), selected), torch.tensor([3.0, 0.0])
    )
    valid = torch.tensor([True, True])
    torch.testing.assert_close(
        weighted_sum_weights(torch.tensor([[2.0, 4.0], [0.0, 2.0]]), torch.tensor([0.5, 0.5]), valid),
        torch.tensor([1.5, 0.5]),
    )


def test_normalisation_batch_and_group():
    rewards = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    valid = torch.ones(4, dtype=torch.bool)
    batch = normalize_rewards(rewards, valid)
    mean, std = 8.5, rewards.std(unbiased=False).item()
    torch.testing.assert_close(batch[:, 0], (rewards[:, 0] - mean) / (std + 1e-6))
    group = normalize_rewards(rewards, valid, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(group[:, 0], torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    # A lone group member maps to 0, and invalid rows are zero and ignored by the statistics.
    lone = normalize_rewards(
        torch.tensor([[4.0], [1.0], [float("nan")]]), torch.tensor([True, True, False]), torch.tensor([0, 1, 1])
    )
    assert lone[:, 0].tolist() == [0.0, 0.0, 0.0]


def test_normalisation_changes_values_not_selection():
    plain = Objective(ObjectiveConfig(reward_normalization="none", name="parrot"), NAMES)(REWARDS, GROUPS, INDEX)
    normed = Objective(ObjectiveConfig(name="parrot", reward_normalization="group"), NAMES)(REWARDS, GROUPS, INDEX)
    assert plain.selected.tolist() == normed.selected.tolist()
    assert not torch.allclose(plain.weights, normed.weights)


def test_non_finite_rewards_get_zero_weight_everywhere():
    rewards = REWARDS.clone()
    rewards[0, 1] = float("nan")
    for config in (
        ObjectiveConfig(reward_normalization="none", name="parrot"),
        ObjectiveConfig(reward_normalization="none", name="weighted_sum"),
        ObjectiveConfig(name="parrot", reward_normalization="batch"),
    ):
        selection = Objective(config, NAMES)(rewards, GROUPS, INDEX)
        assert selection.weights[0] == 0 and not selection.selected[0] and not selection.valid[0]
        assert torch.isfinite(selection.weights).all()


def test_objective_rejects_wrong_number_of_weights():
    with pytest.raises(ValueError, match="2 entries but 3 rewards"):
        Objective(ObjectiveConfig(reward_normalization="none", name="weighted_sum", weights=[0.5, 0.5]), NAMES)


def test_reinforce_loss_gradient_and_ppo_clipping():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    weights = torch.tensor([0.5, 0.0])
    policy_gradient_loss(log_prob, log_prob.detach(), weights).backward()
    # d(−Σ w·logp)/dlogp = −w: ascent raises the weighted sample's log-prob, the zero-weight one gets 0.
    assert log_prob.grad.tolist() == [-0.5, 0.0]

    old = torch.tensor([0.0, 0.0])
    new = torch.tensor([0.5, -0.5], requires_grad=True)  # ratios e^0.5 ≈ 1.65 and e^-0.5 ≈ 0.61
    loss = policy_gradient_loss(new, old, torch.tensor([1.0, -1.0]), clip_range=0.2)
    # Positive weight above 1+ε and negative weight below 1−ε are both clipped: constant loss, no gradient.
    assert loss.item() == pytest.approx(-1.2 + 0.8)
    loss.backward()
    assert new.grad.tolist() == [0.0, 0.0]
    # At ratio 1 the PPO surrogate has the REINFORCE gradient.
    at_one = torch.tensor([-3.0], requires_grad=True)
    policy_gradient_loss(at_one, at_one.detach(), torch.tensor([2.0]), clip_range=0.1).backward()
    assert at_one.grad.tolist() == [-2.0]


# --------------------------------------------------------------------- Pareto advantages and strong baselines

from parrot_t2i.objectives import normalize_then_sum, standardize  # noqa: E402

FIVE = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [0.0, 0.0]])  # A, B, C; D; E
ONE_GROUP = torch.zeros(5, dtype=torch.long)


def z(values):
    values = torch.tensor(values)
    return (values - values.mean()) / (values.std(unbiased=False) + 1e-6)


def weights_of(name, rewards=FIVE, groups=ONE_GROUP, **config):
    objective = Objective(ObjectiveConfig(name=name, **config), ["r1", "r2"][: rewards.shape[1]])
    return objective(rewards, groups, torch.zeros(len(rewards), dtype=torch.long))


def test_front_rank_advantage_by_hand():
    # Scores −rank + 0.5·c/(1+c): A, B (extremes, c = ∞) 0.5; C (c = 2) 1/3; D −0.5; E −1.5.
    selection = weights_of("front_rank")
    torch.testing.assert_close(selection.weights, z([0.5, 0.5, 1 / 3, -0.5, -1.5]) / 5)
    assert selection.selected.all()  # no filter by default: dominated samples carry negative credit


def test_dominance_count_advantage_by_hand():
    torch.testing.assert_close(weights_of("dominance_count").weights, z([2.0, 2.0, 2.0, -2.0, -4.0]) / 5)


def test_hv_contribution_advantage_by_hand():
    torch.testing.assert_close(weights_of("hv_contribution").weights, z([13 / 90, 13 / 90, 1 / 9, 0.0, 0.0]) / 5)


def test_pareto_filter_composes_with_any_credit():
    # Filter + group-z weighted sum: the "Pareto filter + per-reward-normalised advantage" estimator.
    selection = weights_of("weighted_sum", pareto_filter=True, reward_normalization="group")
    assert selection.selected.tolist() == [True, True, True, False, False]
    zs = normalize_rewards(FIVE, torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(selection.weights, torch.cat([zs[:3].mean(1), torch.zeros(2)]) / 3)
    # And Parrot without its filter credits every sample.
    assert weights_of("parrot", pareto_filter=False, reward_normalization="none").selected.all()


def test_normalize_then_sum_by_hand():
    # Group 0 varies only in r1, group 1 only in r2: each group's z-scores are ±1 in the reward
    # that varies and 0 in the constant one, so the summed advantage is ±1 in both groups, however
    # small r2's spread is (a weighted sum of raw rewards would ignore it).
    rewards = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 0.0], [5.0, 0.01]])
    valid = torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(
        normalize_then_sum(rewards, valid, torch.tensor([0, 0, 1, 1])),
        torch.tensor([-1.0, 1.0, -1.0, 1.0]),
        atol=1e-3,
        rtol=0,
    )
    selection = weights_of("normalize_then_sum", rewards, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(selection.weights, torch.tensor([-0.25, 0.25, -0.25, 0.25]), atol=1e-3, rtol=0)


def test_rank_credits_respect_the_scope():
    # Two groups {A, D} and {B, C, E}: per group, D is last of two and E last of three.
    groups = torch.tensor([0, 1, 1, 0, 1])
    per_group = weights_of("dominance_count", groups=groups).weights
    valid = torch.ones(5, dtype=torch.bool)
    torch.testing.assert_close(per_group, standardize(torch.tensor([1.0, 1.0, 1.0, -1.0, -2.0]), valid, groups) / 5)
    globally = weights_of("dominance_count", groups=groups, selection="global").weights
    torch.testing.assert_close(globally, z([2.0, 2.0, 2.0, -2.0, -4.0]) / 5)


def test_random_control_is_zero_mean_per_group_and_seeded():
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    rewards = torch.rand(6, 2)
    draw = lambda seed: (
        Objective(ObjectiveConfig(name="random"), ["r1", "r2"], seed=seed)(
            rewards, groups, torch.zeros(6, dtype=torch.long)
        ).weights
    )
    first = draw(0)
    assert abs(float(first[:3].sum())) < 1e-6 and abs(float(first[3:].sum())) < 1e-6
    assert torch.equal(first, draw(0)) and not torch.equal(first, draw(1))


def test_every_credit_gives_finite_zero_weights_to_non_finite_rows():
    rewards = FIVE.clone()
    rewards[3, 0] = float("nan")
    for name in ("front_rank", "dominance_count", "hv_contribution", "normalize_then_sum", "random"):
        selection = weights_of(name, rewards)
        assert selection.weights[3] == 0 and torch.isfinite(selection.weights).all(), name
