"""The stochastic flow-matching step with a log-probability: what makes a flow model (SD3, FLUX)
a policy over its denoising chain, as the DDIM step of ``diffusion.py`` does for a UNet.

A flow model predicts a velocity v at noise level σ ∈ (0, 1] (x_σ = (1 − σ)·x₀ + σ·ε, so
v ≈ ε − x₀); its deterministic sampler is Euler, x' = x + v·dt with dt = σ' − σ < 0. Two
stochastic samplers share that marginal path and so can be trained by policy gradient:

- ``sde`` (Flow-GRPO, Liu et al. 2025, arXiv 2505.05470): the reverse-time SDE with diffusion
  coefficient std_t = a·sqrt(σ / (1 − σ)), discretised by Euler–Maruyama:
  mean = x·(1 + std_t²/(2σ)·dt) + v·(1 + std_t²(1 − σ)/(2σ))·dt, x' = mean + std_t·sqrt(−dt)·ε.
  At σ = 1 the coefficient is infinite; as Flow-GRPO does, σ_max (the largest σ below 1 of the
  schedule) stands in for σ in 1 − σ there.
- ``cps`` (coefficients-preserving sampling, Wang & Yu 2025, arXiv 2509.05952): from the predicted
  x̂₀ = x − σ·v and ε̂ = x + (1 − σ)·v, x' = (1 − σ')·x̂₀ + sqrt(σ'² − s²)·ε̂ + s·ε with
  s = σ'·sin(a·π/2), so the noise in x' keeps exactly the coefficient σ' the model was trained at.

Both give Euler at a = 0. Log-probs use ``diffusion.transition_log_prob`` (mean over dimensions,
the DDIM convention), so every objective and the KL work on either kind of model unchanged.

``sample_flow_trajectory`` runs the chain on a policy's velocity ``Denoiser`` (SD3's or FLUX's
transformer call) with the guidance of ``diffusion.guided`` in one batched call per step;
``stochastic=False`` is the plain Euler sampler of ``StableDiffusion3Pipeline`` and ``FluxPipeline``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from .diffusion import Conditioning, Denoiser, Guidance, Trajectory, guided, transition_log_prob

FlowSampler = Literal["sde", "cps"]


def _per_sample(values: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or (B,) tensor of σ values as (B, 1, ..., 1) float32 on ``like``'s device."""
    values = torch.as_tensor(values, dtype=torch.float32, device=like.device)
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def flow_sde_step_mean_std(
    sample: Tensor,
    velocity: Tensor,
    sigma: Tensor | float,
    sigma_next: Tensor | float,
    noise_level: float,
    sigma_max: float,
) -> tuple[Tensor, Tensor]:
    """Mean (B, ...) and standard deviation (B, 1, ..., 1) of Flow-GRPO's SDE transition from σ to
    σ' (per sample), in float32. ``sigma_max``: the largest σ < 1 of the schedule (the σ = 1 guard)."""
    x, v = sample.float(), velocity.float()
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    dt = s_next - s
    std_t = noise_level * torch.sqrt(s / (1 - torch.where(s >= 1, torch.full_like(s, sigma_max), s)))
    mean = x * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
    return mean, std_t * torch.sqrt(-dt)


def flow_cps_step_mean_std(
    sample: Tensor, velocity: Tensor, sigma: Tensor | float, sigma_next: Tensor | float, noise_level: float
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the coefficients-preserving transition from σ to σ', in float32."""
    x, v = sample.float(), velocity.float()
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    std = s_next * math.sin(noise_level * math.pi / 2)
    x0, eps = x - s * v, x + (1 - s) * v
    mean = (1 - s_next) * x0 + torch.sqrt((s_next**2 - std**2).clamp(min=0)) * eps
    return mean, std


def flow_step_mean_std(
    kind: FlowSampler,
    sample: Tensor,
    velocity: Tensor,
    sigma: Tensor | float,
    sigma_next: Tensor | float,
    noise_level: float,
    sigma_max: float,
) -> tuple[Tensor, Tensor]:
    """The transition of sampler ``kind`` ("sde" or "cps"); see the module docstring."""
    if kind == "sde":
        return flow_sde_step_mean_std(sample, velocity, sigma, sigma_next, noise_level, sigma_max)
    if kind == "cps":
        return flow_cps_step_mean_std(sample, velocity, sigma, sigma_next, noise_level)
    raise ValueError(f"unknown flow sampler {kind!r}: 'sde' or 'cps'")


def sample_flow_trajectory(
    denoise: Denoiser,
    scheduler: FlowMatchEulerDiscreteScheduler,
    cond: Conditioning,
    uncond: Conditioning,
    latents: Tensor,
    guidance: Guidance,
    generator: torch.Generator | None = None,
    sampler: FlowSampler = "sde",
    noise_level: float = 0.7,
    stochastic: bool | range = True,
    original: Conditioning | None = None,
    on_step: Callable[[], None] | None = None,
) -> Trajectory:
    """Run the chain from ``latents`` (pure noise at σ = 1) through ``scheduler``'s timesteps
    (``set_timesteps`` called), recording every state and each step's log-prob. ``stochastic=False``:
    Euler, as the pipelines sample (log-probs 0: a deterministic step has no density); a range:
    those steps stochastic, Euler elsewhere (MixGRPO's window)."""
    sigmas = scheduler.sigmas.to(latents.device, torch.float32)
    sigma_max = float(sigmas[1])
    x = latents.float()
    states, log_probs = [x], []
    for i, t in enumerate(scheduler.timesteps.to(latents.device)):
        v = guided(denoise, x, t.expand(len(x)), cond, uncond, guidance, original).float()
        if stochastic is True or (stochastic is not False and i in stochastic):
            mean, std = flow_step_mean_std(sampler, x, v, sigmas[i], sigmas[i + 1], noise_level, sigma_max)
            x = mean + std * randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            log_probs.append(transition_log_prob(x, mean, std))
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * v
            log_probs.append(torch.zeros(len(x), device=x.device))
        states.append(x)
        if on_step is not None:
            on_step()
    return Trajectory(torch.stack(states, 1), scheduler.timesteps, torch.stack(log_probs, 1))


def step_sigmas(scheduler: FlowMatchEulerDiscreteScheduler, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """(σ, σ') of per-sample ``timesteps`` of the scheduler's current schedule: each step's noise
    level and the next one's."""
    index = (scheduler.timesteps.to(timesteps.device)[None] == timesteps.reshape(-1, 1)).float().argmax(1)
    sigmas = scheduler.sigmas.to(timesteps.device, torch.float32)
    return sigmas[index], sigmas[index + 1]
