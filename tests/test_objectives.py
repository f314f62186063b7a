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
    selection = Objective(ObjectiveConfig(reward_normalization="none", name="parrot", selection="global"), NAMES)(REWARDS, GROUPS, INDEX)
    # [0.4,0.3,0.6] is not dominated by anything in group 0 either; [0.3,0.3,0.3] still is.
    assert selection.selected.tolist() == [True, True, False, False, True, True]
    selection = Objective(ObjectiveConfig(reward_normalization="none", name="parrot", selection="global"), ["a"])(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert selection.selected.tolist() == [False, True]


def test_weighted_sum_and_single():
    ws = Objective(ObjectiveConfig(reward_normalization="none", name="weighted_sum", weights=[0.5, 0.25, 0.25]), NAMES)(REWARDS, GROUPS, INDEX)
    expected = (REWARDS @ torch.tensor([0.5, 0.25, 0.25])) / 6
    torch.testing.assert_close(ws.weights, expected)
    assert ws.selected.all()
    equal = Objective(ObjectiveConfig(reward_normalization="none", name="weighted_sum"), NAMES)(REWARDS, GROUPS, INDEX)
    torch.testing.assert_close(equal.weights, REWARDS.mean(1) / 6)
    single = Objective(ObjectiveConfig(reward_normalization="none", name="single", reward="preference"), NAMES)(REWARDS, GROUPS, INDEX)
    torch.testing.assert_close(single.weights, REWARDS[:, 1] / 6)


def test_pure_functions_directly():
    selected = torch.tensor([True, False])
    torch.testing.assert_close(parrot_weights(torch.tensor([[2.0, 3.0], [5.0, 7.0]]), torch.tensor([1, 0]), selected), torch.tensor([3.0, 0.0]))
    valid = torch.tensor([True, True])
    torch.testing.assert_close(weighted_sum_weights(torch.tensor([[2.0, 4.0], [0.0, 2.0]]), torch.tensor([0.5, 0.5]), valid), torch.tensor([1.5, 0.5]))


def test_normalisation_batch_and_group():
    rewards = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    valid = torch.ones(4, dtype=torch.bool)
    batch = normalize_rewards(rewards, valid)
    mean, std = 8.5, rewards.std(unbiased=False).item()
    torch.testing.assert_close(batch[:, 0], (rewards[:, 0] - mean) / (std + 1e-6))
    group = normalize_rewards(rewards, valid, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(group[:, 0], torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    # A lone group member maps to 0, and invalid rows are zero and ignored by the statistics.
    lone = normalize_rewards(torch.tensor([[4.0], [1.0], [float("nan")]]), torch.tensor([True, True, False]), torch.tensor([0, 1, 1]))
    assert lone[:, 0].tolist() == [0.0, 0.0, 0.0]


def test_normalisation_changes_values_not_selection():
    plain = Objective(ObjectiveConfig(reward_normalization="none", name="parrot"), NAMES)(REWARDS, GROUPS, INDEX)
    normed = Objective(ObjectiveConfig(name="parrot", reward_normalization="group"), NAMES)(REWARDS, GROUPS, INDEX)
    assert plain.selected.tolist() == normed.selected.tolist()
    assert not torch.allclose(plain.weights, normed.weights)


def test_non_finite_rewards_get_zero_weight_everywhere():
    rewards = REWARDS.clone()
    rewards[0, 1] = float("nan")
    for config in (ObjectiveConfig(reward_normalization="none", name="parrot"), ObjectiveConfig(reward_normalization="none", name="weighted_sum"), ObjectiveConfig(name="parrot", reward_normalization="batch")):
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
