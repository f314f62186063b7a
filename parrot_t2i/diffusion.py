"""Stochastic DDIM sampling with per-step log-probabilities, and their recomputation for training.

Parrot's policy is the denoising chain: each DDIM step with η > 0 is a Gaussian
p_θ(x_{t-1} | x_t, c) = N(μ_θ(x_t, t, c), σ_t² I) (Song et al. 2021, Eq. 12/16), so the chain's
log-likelihood is a sum of per-step Gaussian log-densities (DDPO, Black et al. 2024).

Log-prob convention: **mean** over the non-batch dimensions of the per-element Gaussian
log-density (as DDPO does), so the loss scale and a good learning rate do not depend on the
resolution. Sum over dimensions = mean × C·H·W.

The arithmetic reuses the scheduler's own tables (``alphas_cumprod``, ``final_alpha_cumprod``,
prediction type, sample clipping), and is checked against ``DDIMScheduler.step`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from diffusers import DDIMScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor


@dataclass
class Conditioning:
    """Text conditioning of a batch: encoder hidden states plus SDXL-style extra UNet inputs."""

    embeds: Tensor  # (B, L, D) encoder_hidden_states
    added: dict[str, Tensor] = field(default_factory=dict)  # e.g. SDXL text_embeds, time_ids: (B, ...)

    def __getitem__(self, index) -> Conditioning:
        return Conditioning(self.embeds[index], {k: v[index] for k, v in self.added.items()})

    def expand(self, n: int) -> Conditioning:
        """Broadcast a batch of one (e.g. the empty prompt) to n rows, as views."""
        return Conditioning(
            self.embeds.expand(n, *self.embeds.shape[1:]), {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()}
        )

    def __len__(self) -> int:
        return len(self.embeds)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        added = {k: torch.cat([p.added[k] for p in parts]) for k in parts[0].added}
        return Conditioning(torch.cat([p.embeds for p in parts]), added)


@dataclass
class Trajectory:
    """Everything the update needs from one sampled batch."""

    latents: Tensor  # (B, T+1, C, H, W): x_T ... x_0
    timesteps: Tensor  # (T,) scheduler timesteps, descending
    log_probs: Tensor  # (B, T): log p(x_{t-1} | x_t) at sampling time


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Mean over non-batch dims of log N(x; mean, std²). x, mean (B, ...); std broadcastable -> (B,)."""
    log_density = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return log_density.mean(dim=tuple(range(1, x.ndim)))


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """ε(∅) + w·(ε(c) − ε(∅)) (Ho & Salimans 2022)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def original_prompt_guidance(
    eps_uncond: Tensor, eps_orig: Tensor, eps_expanded: Tensor, w1: float, w2: float
) -> Tensor:
    """Paper Eq. 5, original-prompt-centred guidance: ε(∅) + w1·(ε(c) − ε(∅)) + w2·(ε(ĉ) − ε(∅)).

    c is the user's prompt and ĉ its expansion (with reward identifiers). The c term keeps the
    image on what the user asked for while the ĉ term adds what the expansion and identifiers
    bring. With w2 = 0 it is plain CFG on c; with ĉ = c it is plain CFG with w = w1 + w2.
    """
    return eps_uncond + w1 * (eps_orig - eps_uncond) + w2 * (eps_expanded - eps_uncond)


def eq5_positive(eps_orig: Tensor, eps_expanded: Tensor, w1: float, w2: float) -> Tensor:
    """The conditional prediction Eq. 5 extrapolates towards, (w1·ε(c) + w2·ε(ĉ)) / (w1 + w2):
    what guidance rescale matches the standard deviation of (ε(c) itself when ĉ = c, as in CFG)."""
    return (w1 * eps_orig + w2 * eps_expanded) / max(w1 + w2, 1e-8)


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def ddim_step_mean_std(
    scheduler: DDIMScheduler, model_output: Tensor, timesteps: Tensor, sample: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """Mean (B, C, H, W) and standard deviation (B, 1, 1, 1) of the stochastic DDIM transition
    p(x_{t-1} | x_t) (Song et al. 2021, Eq. 12 with σ_t = η·σ_t(η=1)). Computed in float32.

    model_output, sample: (B, C, H, W); timesteps: (B,) or scalar (every sample may sit at a
    different step, as in timestep-subsampled training).
    """
    if eta <= 0:
        raise ValueError("eta must be > 0: a deterministic DDIM step has no log-probability")
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_inference_steps) first")
    cfg = scheduler.config
    model_output, sample = model_output.float(), sample.float()
    t = timesteps.to(sample.device).long().expand(len(sample))
    prev_t = t - cfg.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(sample.device, torch.float32)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=sample.device)
    alpha_t = _per_sample(alphas[t], sample.ndim)
    alpha_prev = _per_sample(torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], final), sample.ndim)
    beta_t = 1 - alpha_t

    if cfg.prediction_type == "epsilon":
        pred_x0, pred_eps = (sample - beta_t.sqrt() * model_output) / alpha_t.sqrt(), model_output
    elif cfg.prediction_type == "v_prediction":
        pred_x0 = alpha_t.sqrt() * sample - beta_t.sqrt() * model_output
        pred_eps = alpha_t.sqrt() * model_output + beta_t.sqrt() * sample
    elif cfg.prediction_type == "sample":
        pred_x0, pred_eps = model_output, (sample - alpha_t.sqrt() * model_output) / beta_t.sqrt()
    else:
        raise ValueError(f"unsupported prediction_type {cfg.prediction_type!r}")
    if cfg.thresholding:
        raise ValueError("dynamic thresholding is not supported by the log-prob DDIM step")
    if cfg.clip_sample:
        pred_x0 = pred_x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)  # σ_t² at η = 1
    std = eta * variance.sqrt()
    mean = alpha_prev.sqrt() * pred_x0 + (1 - alpha_prev - std**2).clamp(min=0).sqrt() * pred_eps
    return mean, std


def transition_log_prob(prev_sample: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(prev_sample; mean, std²), mean over non-batch dims -> (B,).

    A step with σ = 0 (the last step when final_alpha_cumprod = 1) is deterministic: it has no
    density and no policy-gradient term, so its log-prob is defined as 0.
    """
    stochastic = std.flatten() > 0
    log_prob = gaussian_log_prob(prev_sample.float(), mean, torch.where(std > 0, std, torch.ones_like(std)))
    return torch.where(stochastic, log_prob, torch.zeros_like(log_prob))


def gaussian_kl_same_std(mean: Tensor, ref_mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, σ²) ‖ N(ref_mean, σ²)) = (mean − ref_mean)² / (2σ²), mean over non-batch dims -> (B,),
    the same convention as :func:`gaussian_log_prob`. Both transitions of one DDIM step share σ,
    so this is the exact per-step KL to a reference policy (Flow-GRPO's KL term); 0 where σ = 0."""
    safe = torch.where(std > 0, std, torch.ones_like(std))
    kl = ((mean - ref_mean) ** 2 / (2 * safe**2)).mean(dim=tuple(range(1, mean.ndim)))
    return torch.where(std.flatten() > 0, kl, torch.zeros_like(kl))


def ddim_step_log_prob(
    scheduler: DDIMScheduler,
    model_output: Tensor,
    timesteps: Tensor,
    sample: Tensor,
    eta: float,
    prev_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One stochastic DDIM step x_t -> x_{t-1} and its log-probability.

    When ``prev_sample`` is given it is scored instead of drawn. Returns (prev_sample, log_prob (B,)).
    """
    mean, std = ddim_step_mean_std(scheduler, model_output, timesteps, sample, eta)
    if prev_sample is None:
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float32)
        prev_sample = mean + std * noise
    return prev_sample, transition_log_prob(prev_sample, mean, std)


def guided_noise(
    unet,
    sample: Tensor,
    timesteps: Tensor,
    cond: Conditioning,
    uncond: Conditioning,
    guidance_scale: float,
    rescale: float = 0.0,
) -> Tensor:
    """Classifier-free-guided ε from **one** batched UNet call over [uncond; cond].

    ``rescale`` φ > 0 applies guidance rescale (Lin et al. 2024, §3.4; diffusers' ``rescale_noise_cfg``):
    the guided prediction is pulled towards the conditional one's standard deviation, which
    undoes the over-saturation strong guidance causes.
    """
    return guided(unet_denoiser(unet), sample, timesteps, cond, uncond, CFG(guidance_scale, rescale))


def original_guided_noise(
    unet,
    sample: Tensor,
    timesteps: Tensor,
    orig: Conditioning,
    expanded: Conditioning,
    uncond: Conditioning,
    w1: float,
    w2: float,
    rescale: float = 0.0,
) -> Tensor:
    """Eq. 5 ε from **one** batched UNet call over [uncond; original; expanded] (three branches);
    ``rescale`` as in :func:`guided_noise`, against :func:`eq5_positive`."""
    return guided(unet_denoiser(unet), sample, timesteps, expanded, uncond, Eq5(w1, w2, rescale), original=orig)


@dataclass(frozen=True)
class CFG:
    """Classifier-free guidance on one conditioning: ε(∅) + scale·(ε(c) − ε(∅)), optionally rescaled."""

    scale: float
    rescale: float = 0.0


@dataclass(frozen=True)
class Eq5:
    """The paper's original-prompt-centred guidance (Eq. 5): ε(∅) + w1·(ε(c) − ε(∅)) + w2·(ε(ĉ) − ε(∅)),
    with c the original prompt and ĉ the conditioning sampled on; optionally rescaled."""

    w1: float
    w2: float
    rescale: float = 0.0


Guidance = CFG | Eq5


def guidance_branches(
    guidance: Guidance, cond: Conditioning, uncond: Conditioning, original: Conditioning | None = None
) -> list[Conditioning]:
    """The conditionings one batched denoiser call runs for ``guidance``: [∅; c] for CFG, [∅; c; ĉ]
    for Eq. 5 (``original`` is c, the user prompt; ``cond`` the conditioning sampled on). An
    ``uncond`` batch of one is broadcast to the batch."""
    empty = uncond.expand(len(cond)) if len(uncond) == 1 else uncond
    if isinstance(guidance, CFG):
        return [empty, cond]
    if original is None:
        raise ValueError("Eq. 5 guidance needs the original prompts' conditioning")
    return [empty, original, cond]


def combine_guided(guidance: Guidance, output: Tensor) -> Tensor:
    """The guided prediction (ε or velocity) from a denoiser output over :func:`guidance_branches`,
    rescaled against the positive prediction when ``guidance.rescale`` > 0."""
    if isinstance(guidance, CFG):
        uncond, positive = output.chunk(2)
        combined = classifier_free_guidance(uncond, positive, guidance.scale)
    else:
        uncond, orig, expanded = output.chunk(3)
        combined = original_prompt_guidance(uncond, orig, expanded, guidance.w1, guidance.w2)
        positive = eq5_positive(orig, expanded, guidance.w1, guidance.w2)
    return rescale_noise_cfg(combined, positive, guidance.rescale) if guidance.rescale > 0 else combined


Denoiser = Callable[[Tensor, Tensor, Conditioning], Tensor]
"""A model call on a batch: (sample, timesteps (B,), conditioning) → the prediction (a UNet's ε, a
flow transformer's velocity). Each policy makes one; guidance is the same arithmetic for all."""


def unet_denoiser(unet) -> Denoiser:
    """The UNet as a :data:`Denoiser`."""
    return partial(_unet, unet)


def guided(
    denoise: Denoiser,
    sample: Tensor,
    timesteps: Tensor,
    cond: Conditioning,
    uncond: Conditioning,
    guidance: Guidance,
    original: Conditioning | None = None,
) -> Tensor:
    """The guided prediction of ``guidance`` from **one** batched denoiser call (two branches for
    CFG, three for Eq. 5, which needs ``original``, the original prompts' conditioning). CFG at
    scale 1 is the conditional prediction alone, one branch."""
    t = timesteps.expand(len(sample))
    if isinstance(guidance, CFG) and guidance.scale == 1.0:
        return denoise(sample, t, cond)
    branches = guidance_branches(guidance, cond, uncond, original)
    n = len(branches)
    return combine_guided(guidance, denoise(torch.cat([sample] * n), torch.cat([t] * n), Conditioning.cat(branches)))


def _unet(unet, sample: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
    extra = {"added_cond_kwargs": cond.added} if cond.added else {}
    sample = sample.to(cond.embeds.dtype)
    if _channels_last(unet):  # a layout mismatch at the first convolution costs most of the gain
        sample = sample.contiguous(memory_format=torch.channels_last)
    return unet(sample, timesteps, encoder_hidden_states=cond.embeds, return_dict=False, **extra)[0]


def _channels_last(unet) -> bool:
    weight = getattr(getattr(unet, "conv_in", None), "weight", None)
    return weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


def step_mean_std(
    unet,
    scheduler: DDIMScheduler,
    sample: Tensor,
    timesteps: Tensor,
    cond: Conditioning,
    uncond: Conditioning,
    guidance_scale: float,
    eta: float,
) -> tuple[Tensor, Tensor]:
    """The guided transition p_θ(· | sample) under the current weights, with gradients: (mean, std)."""
    eps = guided_noise(unet, scheduler.scale_model_input(sample, timesteps), timesteps, cond, uncond, guidance_scale)
    return ddim_step_mean_std(scheduler, eps, timesteps, sample, eta)


def step_log_prob(
    unet,
    scheduler: DDIMScheduler,
    sample: Tensor,
    prev_sample: Tensor,
    timesteps: Tensor,
    cond: Conditioning,
    uncond: Conditioning,
    guidance_scale: float,
    eta: float,
) -> Tensor:
    """Recompute log p_θ(prev_sample | sample) under the current weights, with gradients.

    sample, prev_sample: (B, C, H, W); timesteps: (B,). Returns (B,). With unchanged weights this
    reproduces the sampling-time log-probs (tested to 1e-5).
    """
    return transition_log_prob(
        prev_sample, *step_mean_std(unet, scheduler, sample, timesteps, cond, uncond, guidance_scale, eta)
    )
