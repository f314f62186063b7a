"""The stochastic flow-matching steps: hand-worked numbers, the Euler limit against diffusers'
FlowMatchEulerDiscreteScheduler, the density, and the σ = 1 guard. The flow policies built on
them are tested in test_policies.py."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from parrot_t2i.diffusion import transition_log_prob
from parrot_t2i.flow import flow_cps_step_mean_std, flow_sde_step_mean_std, flow_step_mean_std


def test_sde_step_by_hand():
    # σ = 0.5, σ' = 0.25, a = 0.5: std_t = 0.5·sqrt(0.5 / 0.5) = 0.5, dt = −0.25;
    # mean = x·(1 + 0.25/1·(−0.25)) + v·(1 + 0.25·0.5/1)·(−0.25) = 0.9375·x − 0.28125·v;
    # the transition's std = std_t·sqrt(−dt) = 0.5·0.5 = 0.25.
    x, v = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 4.0]])
    mean, std = flow_sde_step_mean_std(x, v, 0.5, 0.25, noise_level=0.5, sigma_max=0.9)
    torch.testing.assert_close(mean, torch.tensor([[0.9375 * 2 - 0.28125, -0.9375 - 0.28125 * 4]]))
    assert std.item() == pytest.approx(0.25)


def test_cps_step_by_hand():
    # σ = 0.75, σ' = 0.5, a = 1/3: s = 0.5·sin(π/6) = 0.25; x̂₀ = x − 0.75·v, ε̂ = x + 0.25·v;
    # mean = 0.5·x̂₀ + sqrt(0.25 − 0.0625)·ε̂. The noise coefficient stays σ': 0.1875 + s² = σ'².
    x, v = torch.tensor([[1.0, 2.0]]), torch.tensor([[-2.0, 0.5]])
    mean, std = flow_cps_step_mean_std(x, v, 0.75, 0.5, noise_level=1 / 3)
    x0, eps = x - 0.75 * v, x + 0.25 * v
    torch.testing.assert_close(mean, 0.5 * x0 + math.sqrt(0.1875) * eps)
    assert std.item() == pytest.approx(0.25) and 0.1875 + std.item() ** 2 == pytest.approx(0.5**2)


@pytest.mark.parametrize("kind", ["sde", "cps"])
def test_without_noise_both_are_the_schedulers_euler_step(kind):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(8)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(3, 4, 8, 8, generator=generator)
        expected = scheduler.step(v, t, x).prev_sample  # the scheduler counts its own steps
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        mean, std = flow_step_mean_std(kind, x, v, sigma, sigma_next, 1e-12, float(scheduler.sigmas[1]))
        torch.testing.assert_close(mean, expected, atol=1e-6, rtol=0)
        assert std.max() < 1e-6
        x = expected


@pytest.mark.parametrize("kind", ["sde", "cps"])
def test_log_prob_is_the_gaussian_density_mean_over_dimensions(kind):
    generator = torch.Generator().manual_seed(1)
    x, v, noise = (torch.randn(2, 3, 4, 4, generator=generator) for _ in range(3))
    sigma = torch.tensor([0.9, 0.4])  # each sample at its own step
    mean, std = flow_step_mean_std(kind, x, v, sigma, sigma - 0.1, 0.7, 0.95)
    assert std.shape == (2, 1, 1, 1) and (std > 0).all()
    prev = mean + std * noise
    expected = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
    torch.testing.assert_close(transition_log_prob(prev, mean, std), expected, atol=1e-5, rtol=0)


def test_sde_noise_at_sigma_one_uses_the_largest_sigma_below_one():
    x, v = torch.ones(1, 2), torch.zeros(1, 2)
    _, std = flow_sde_step_mean_std(x, v, 1.0, 0.9, noise_level=0.7, sigma_max=0.95)
    assert std.item() == pytest.approx(0.7 * math.sqrt(1 / 0.05) * math.sqrt(0.1))
    with pytest.raises(ValueError, match="unknown flow sampler 'ode'"):
        flow_step_mean_std("ode", x, v, 1.0, 0.9, 0.7, 0.95)
