"""Generate and score: the before/after summary of a run, and ``parrot generate``.

Evaluation samples with deterministic DDIM (η = 0) from a fixed seed, so that "before" and
"after" start from the same noise and differ only by the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import guided_noise
from .rewards import Reward
from .t2i import T2IPolicy


def identifier_prefix(num_rewards: int, template: str = "<reward {k}>", chosen: list[int] | None = None) -> str:
    """"<reward 1> <reward 2> …": the identifiers of ``chosen`` (1-based; default all) rewards."""
    return " ".join(template.format(k=k) for k in (chosen or range(1, num_rewards + 1)))


@torch.no_grad()
def generate(
    policy: T2IPolicy,
    prompts: list[str],
    *,
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    eta: float = 0.0,
    batch_size: int = 64,
    desc: str | None = None,
) -> Tensor:
    """Images (B, 3, H, W) in [0, 1], one per prompt (repeat a prompt for several).

    With ``desc``, a progress bar counts the UNet calls.
    """
    device = policy.unet.device
    scheduler = DDIMScheduler.from_config(policy.scheduler.config)  # a copy: training keeps its own timesteps
    scheduler.set_timesteps(num_inference_steps, device=device)
    generator = torch.Generator(device).manual_seed(seed)
    uncond = policy.encode([""])
    images = []
    chunks = range(0, len(prompts), batch_size)
    with tqdm(total=len(chunks) * len(scheduler.timesteps), desc=desc, unit="step", disable=desc is None, leave=False) as bar:
        for start in chunks:
            cond = policy.encode(prompts[start : start + batch_size])
            x = randn_tensor((len(cond), *policy.latent_shape()), generator=generator, device=device) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                eps = guided_noise(policy.unet, scheduler.scale_model_input(x, t), t.reshape(1), cond, uncond.expand(len(cond)), guidance_scale)
                x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
                bar.update()
            images.append(policy.decode(x))
    return torch.cat(images)


@torch.no_grad()
def score(rewards: list[Reward], images: Tensor, prompts: list[str]) -> Tensor:
    """(B, K) reward matrix; each reward sees the prompts as given (pass the original prompts)."""
    return torch.stack([reward(images, prompts).float().cpu() for reward in rewards], 1)


@dataclass
class Evaluation:
    prompts: list[str]  # (B,) original prompts, each repeated images_per_prompt times
    images: Tensor  # (B, 3, H, W)
    scores: Tensor  # (B, K)
    reward_names: list[str]

    def means(self) -> dict[str, float]:
        means = {name: float(self.scores[:, k].mean()) for k, name in enumerate(self.reward_names)}
        means["average"] = sum(means.values()) / len(self.reward_names)
        return means


def evaluate(
    policy: T2IPolicy,
    rewards: list[Reward],
    reward_names: list[str],
    prompts: list[str],
    *,
    images_per_prompt: int,
    prefix: str = "",
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    batch_size: int = 64,
    desc: str | None = None,
) -> Evaluation:
    """Draw ``images_per_prompt`` images per prompt (conditioned on ``prefix + prompt``) and score
    them against the original prompts."""
    originals = [p for p in prompts for _ in range(images_per_prompt)]
    conditioned = [f"{prefix} {p}" if prefix else p for p in originals]
    images = generate(policy, conditioned, seed=seed, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, batch_size=batch_size, desc=desc)
    return Evaluation(originals, images, score(rewards, images, originals), reward_names)


def comparison_table(before: dict[str, float], after: dict[str, float]) -> str:
    """A Markdown table of every reward before and after training."""
    lines = ["| reward | before | after | change |", "|---|---:|---:|---:|"]
    for name, value in before.items():
        lines.append(f"| {name} | {value:.4f} | {after[name]:.4f} | {after[name] - value:+.4f} |")
    return "\n".join(lines)
