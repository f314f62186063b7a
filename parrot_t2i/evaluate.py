"""Parrot at inference (paper §3.4), and scoring: the before/after summary of a run, ``parrot generate``.

A user prompt c becomes images in three steps: the PEN expands it to ĉ, the chosen reward
identifiers are prefixed (ĉ' = "<reward 1> … <reward K> ĉ"), and the sampler follows
original-prompt-centred guidance (Eq. 5), which keeps c itself in the denoiser's conditioning.
Each step can be switched off, which gives the paper's ablations.

Evaluation samples with the policy's deterministic sampler (DDIM η = 0) from a fixed seed, so that
"before" and "after" start from the same noise and differ only by the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import Config
from .diffusion import CFG, Eq5, Guidance
from .identifiers import choose_identifiers, identifier_strings, with_identifiers
from .pen import PromptExpander
from .policies import Policy
from .rewards import Reward, score_all


@dataclass
class Inference:
    """How a user prompt becomes images. Build it with :func:`inference_from_config`: a config's
    ``eval`` and ``sample`` sections are the one source of these settings."""

    expander: PromptExpander | None  # the PEN; None: no expansion (ĉ = c)
    identifiers: list[str]  # identifier strings prefixed to ĉ, e.g. all K
    original_guidance: bool  # Eq. 5 with w1, w2; False: CFG on ĉ' with guidance_scale
    w1: float
    w2: float
    guidance_rescale: float  # φ of guidance rescale (Lin et al. 2024); 0: off
    guidance_scale: float
    num_inference_steps: int
    noise_level: float  # the sampler's noise (DDIM η); 0: deterministic
    seed: int
    temperature: float  # PEN sampling
    top_p: float
    max_new_tokens: int

    @property
    def guidance(self) -> Guidance:
        """The guidance these settings describe: Eq. 5 around the original prompt, or CFG on ĉ'."""
        if self.original_guidance:
            return Eq5(self.w1, self.w2, self.guidance_rescale)
        return CFG(self.guidance_scale, self.guidance_rescale)


def inference_from_config(
    config: Config, expander: PromptExpander | None, trained_identifiers: bool | None = None
) -> Inference:
    """The inference a config's ``eval`` settings describe. Identifiers are prefixed only if the
    model learnt them: by default, if the config trained with them (``prompts.identifiers``); pass
    ``trained_identifiers=False`` for a base model that never saw them."""
    strings = identifier_strings(
        len(config.rewards), config.prompts.identifier_template, config.prompts.identifier_strings
    )
    learnt = config.prompts.identifiers if trained_identifiers is None else trained_identifiers
    pen, ev = config.pen, config.eval
    return Inference(
        expander=expander if ev.expand else None,
        identifiers=choose_identifiers(ev.identifiers, strings) if learnt else [],
        original_guidance=ev.original_prompt_guidance,
        w1=ev.w1,
        w2=ev.w2,
        guidance_rescale=ev.guidance_rescale,
        guidance_scale=config.sample.guidance_scale,
        num_inference_steps=ev.num_inference_steps or config.sample.num_inference_steps,
        noise_level=0.0,
        seed=ev.seed,
        temperature=pen.temperature,
        top_p=pen.top_p,
        max_new_tokens=pen.max_new_tokens,
    )


def conditioned_prompts(policy: Policy, prompts: list[str], inference: Inference) -> tuple[list[str], list[str]]:
    """(expansions ĉ, texts ĉ' = identifiers + ĉ the T2I model is conditioned on), one per prompt.

    Expansions are sampled with the inference seed and shortened so that ĉ' never exceeds the
    T2I text encoder's limit.
    """
    if inference.expander is None:
        return list(prompts), [with_identifiers(p, inference.identifiers) for p in prompts]
    pen = inference.expander
    sampled = pen.sample(
        prompts,
        max_new_tokens=inference.max_new_tokens,
        temperature=inference.temperature,
        top_p=inference.top_p,
        seed=inference.seed,
    )
    expansions = pen.fit_to(sampled, lambda row, text: policy.fits(with_identifiers(text, inference.identifiers))).texts
    return expansions, [with_identifiers(e, inference.identifiers) for e in expansions]


@torch.no_grad()
def generate(
    policy: Policy,
    prompts: list[str],
    guidance: Guidance,
    *,
    seed: int,
    num_inference_steps: int,
    originals: list[str] | None = None,
    noise_level: float = 0.0,
    batch_size: int = 64,
    desc: str | None = None,
) -> Tensor:
    """Images (B, 3, H, W) in [0, 1], one per prompt (repeat a prompt for several), all from one
    seeded noise stream: deterministic DDIM unless ``noise_level`` > 0.

    ``guidance``: CFG on ``prompts``, or Eq. 5 with ``prompts`` as ĉ and ``originals`` (the user
    prompts c, one per row). With ``desc``, a progress bar counts the denoising steps.
    """
    if isinstance(guidance, Eq5) and originals is None:
        raise ValueError("Eq. 5 guidance needs the original prompts (originals=...)")
    generator = torch.Generator(policy.device).manual_seed(seed)
    uncond = policy.encode_negative()
    images = []
    chunks = range(0, len(prompts), batch_size)
    with tqdm(
        total=len(chunks) * num_inference_steps, desc=desc, unit="step", disable=desc is None, leave=False
    ) as bar:
        for start in chunks:
            cond = policy.encode(prompts[start : start + batch_size])
            original = policy.encode(originals[start : start + batch_size]) if isinstance(guidance, Eq5) else None
            trajectory = policy.sample(
                cond,
                uncond.expand(len(cond)),
                guidance,
                generator=generator,
                stochastic=noise_level > 0,
                noise_level=noise_level,
                num_inference_steps=num_inference_steps,
                original=original,
                on_step=bar.update,
            )
            images.append(policy.decode(trajectory.latents[:, -1]))
    return torch.cat(images)


@torch.no_grad()
def score(rewards: list[Reward], images: Tensor, prompts: list[str]) -> Tensor:
    """(B, K) reward matrix; each reward sees the prompts as given (pass the original prompts)."""
    return score_all(rewards, images, prompts).cpu()


def infer(
    policy: Policy, prompts: list[str], inference: Inference, *, batch_size: int = 64, desc: str | None = None
) -> tuple[Tensor, list[str]]:
    """Parrot inference for each prompt: (images (B, 3, H, W), expansions ĉ)."""
    expansions, conditioned = conditioned_prompts(policy, prompts, inference)
    images = generate(
        policy,
        conditioned,
        inference.guidance,
        originals=prompts,
        seed=inference.seed,
        num_inference_steps=inference.num_inference_steps,
        noise_level=inference.noise_level,
        batch_size=batch_size,
        desc=desc,
    )
    return images, expansions


@dataclass
class Evaluation:
    prompts: list[str]  # (B,) original prompts, each repeated images_per_prompt times
    images: Tensor  # (B, 3, H, W)
    scores: Tensor  # (B, K)
    reward_names: list[str]
    expansions: list[str]  # (B,) what the PEN made of each prompt (the prompt itself without a PEN)

    def means(self) -> dict[str, float]:
        means = {name: float(self.scores[:, k].mean()) for k, name in enumerate(self.reward_names)}
        means["average"] = sum(means.values()) / len(self.reward_names)
        return means


def evaluate(
    policy: Policy,
    rewards: list[Reward],
    reward_names: list[str],
    prompts: list[str],
    *,
    images_per_prompt: int,
    inference: Inference,
    batch_size: int = 64,
    desc: str | None = None,
) -> Evaluation:
    """Draw ``images_per_prompt`` images per prompt with ``inference`` and score them against the
    original prompts (alignment to what the user asked for, as the paper evaluates)."""
    originals = [p for p in prompts for _ in range(images_per_prompt)]
    images, expansions = infer(policy, originals, inference, batch_size=batch_size, desc=desc)
    return Evaluation(originals, images, score(rewards, images, originals), reward_names, expansions)


def comparison_table(before: dict[str, float], after: dict[str, float]) -> str:
    """A Markdown table of every reward before and after training."""
    lines = ["| reward | before | after | change |", "|---|---:|---:|---:|"]
    for name, value in before.items():
        lines.append(f"| {name} | {value:.4f} | {after[name]:.4f} | {after[name] - value:+.4f} |")
    return "\n".join(lines)
