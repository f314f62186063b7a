"""The flow-matching policy for Stable Diffusion 3 / 3.5: ``SD3Transformer2DModel`` with the
stochastic flow step of ``flow.py`` (Flow-GRPO's SDE or CPS), behind the ``Policy`` interface.

Prompts are encoded by diffusers' own ``StableDiffusion3Pipeline.encode_prompt`` (two CLIPs'
penultimate states concatenated and padded to the T5 width, T5's states after them, the CLIPs'
pooled projections as ``pooled_projections``), so the conditioning is exactly the pipeline's; T5
is optional (``t5=False``: zeros in its place, as the pipeline does). The deterministic sampler
is the pipeline's Euler chain (tested equal to it on a tiny SD3).

Not yet here (issue 17): the trainable set (LoRA on the attention projections) and its files, so
the trainer cannot train this policy yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from .builtin import resolve
from .diffusion import CFG, Conditioning, Guidance, Trajectory
from .errors import missing_weights_error
from .flow import FlowSampler, flow_step_mean_std, flow_velocity, sample_flow_trajectory, step_sigmas


@dataclass
class SD3Policy:
    pipe: StableDiffusion3Pipeline  # the components, and diffusers' own prompt encoding
    noise_level: float = 0.7  # a of the flow SDE (Flow-GRPO: 0.7 for SD3.5), set by set_sampler
    sampler: FlowSampler = "sde"

    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype = torch.float32, t5: bool = True) -> SD3Policy:
        """An SD3 / SD3.5 folder or hub id; ``t5=False`` loads it without its T5 encoder."""
        source = resolve(name_or_path, "t2i")
        without_t5 = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
        try:
            pipe = StableDiffusion3Pipeline.from_pretrained(source, torch_dtype=torch_dtype, **without_t5)
        except OSError as err:
            raise missing_weights_error(source, err) from None
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
            if module is not None:
                module.requires_grad_(False).eval()
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe)

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def resolution(self) -> int:
        return self.transformer.config.sample_size * self.pipe.vae_scale_factor

    def latent_shape(self) -> tuple[int, int, int]:
        side = self.transformer.config.sample_size
        return (self.transformer.config.in_channels, side, side)

    def fits(self, text: str) -> bool:
        """Whether the CLIP encoders take ``text`` whole (T5 takes longer prompts)."""
        return len(self.pipe.tokenizer(text).input_ids) <= self.pipe.tokenizer.model_max_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        with torch.set_grad_enabled(grad):
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompts, prompts, prompts, device=self.device, do_classifier_free_guidance=False
            )
        return Conditioning(embeds, {"pooled_projections": pooled})

    def encode_negative(self) -> Conditioning:
        return self.encode([""])

    def set_sampler(self, num_inference_steps: int, noise_level: float) -> None:
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        self.noise_level = noise_level

    @torch.no_grad()
    def sample(
        self,
        cond: Conditioning,
        uncond: Conditioning,
        guidance: Guidance,
        *,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
        num_inference_steps: int | None = None,
        noise_level: float | None = None,
        original: Conditioning | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Trajectory:
        """The chain from fresh noise (drawn as the pipeline draws it): the flow SDE with
        log-probs, or with ``stochastic=False`` the pipeline's Euler sampler."""
        scheduler = self.scheduler
        if num_inference_steps is not None:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = randn_tensor(
            (len(cond), *self.latent_shape()), generator=generator, device=self.device, dtype=torch.float32
        )
        return sample_flow_trajectory(
            self.transformer,
            scheduler,
            cond,
            uncond,
            latents,
            guidance,
            generator,
            self.sampler,
            self.noise_level if noise_level is None else noise_level,
            stochastic,
            original,
            on_step,
        )

    def step_mean_std(
        self, sample: Tensor, timesteps: Tensor, cond: Conditioning, uncond: Conditioning, guidance: CFG
    ) -> tuple[Tensor, Tensor]:
        """The training sampler's transition at per-sample ``timesteps``, with gradients."""
        sigma, sigma_next = step_sigmas(self.scheduler, timesteps)
        velocity = flow_velocity(self.transformer, sample, timesteps, cond, uncond, guidance)
        sigma_max = float(self.scheduler.sigmas[1])
        return flow_step_mean_std(self.sampler, sample, velocity, sigma, sigma_next, self.noise_level, sigma_max)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images (B, 3, H, W) in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        scaled = latents / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(scaled.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)

    def train(self, mode: bool = True) -> SD3Policy:
        self.transformer.train(mode)
        return self
