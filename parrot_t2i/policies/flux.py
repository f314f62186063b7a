"""FLUX.1 as a policy: ``FluxTransformer2DModel`` behind ``FlowTransformerPolicy``.

What differs from SD3, each as ``FluxPipeline`` does it:

- Text: T5's hidden states condition the tokens, CLIP's pooled output the modulation
  (``FluxPipeline.encode_prompt``; T5 is not optional). Text and image tokens carry rotary
  position ids (``txt_ids`` zeros, ``img_ids`` the latent grid), the same for every sample.
- Latents are packed: 2×2 patches of the VAE latent become tokens, (H/16 · W/16, 4C). The chain
  runs on packed latents; ``decode`` unpacks them.
- The schedule is shifted by the image's token count (μ of ``calculate_shift``) over
  σ = linspace(1, 1/T, T).
- The transformer takes σ (timesteps / 1000). FLUX.1-dev is guidance-distilled: its guidance is
  an input (``distilled_guidance``, the pipeline's ``guidance_scale``, 3.5 by default), and the
  guidance of our ``Guidance`` values is *true* CFG over separate forward branches, as
  ``FluxPipeline(true_cfg_scale=…)`` computes it (``CFG(1)``: one branch, no negative prompt).

LoRA goes on the attention projections of the double-stream blocks (both streams) and the
single-stream blocks' q/k/v, saved in the layout ``FluxPipeline.load_lora_weights`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..diffusion import Conditioning
from ..flow import FlowSampler
from .flow_transformer import FlowTransformerPolicy

DISTILLED_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default


@dataclass
class FluxPolicy(FlowTransformerPolicy):
    distilled_guidance: float = DISTILLED_GUIDANCE  # FLUX.1-dev's guidance input; unused by FLUX.1-schnell
    max_sequence_length: int = 512  # T5 tokens (FluxPipeline's default)
    pipeline_class = FluxPipeline

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        torch_dtype: torch.dtype = torch.float32,
        resolution: int | None = None,
        sampler: FlowSampler = "sde",
        distilled_guidance: float = DISTILLED_GUIDANCE,
    ) -> FluxPolicy:
        """A FLUX.1 folder or hub id; ``resolution`` defaults to the pipeline's (1024 px on FLUX.1)."""
        pipe = cls.load_pipeline(name_or_path, torch_dtype)
        side = resolution or pipe.default_sample_size * pipe.vae_scale_factor
        return cls(pipe, side, sampler=sampler, distilled_guidance=distilled_guidance)

    @property
    def _grid(self) -> int:
        """The side of the VAE latent (even: 2×2 patches)."""
        return 2 * (self.resolution // (self.pipe.vae_scale_factor * 2))

    def latent_shape(self) -> tuple[int, int]:
        channels = self.transformer.config.in_channels // 4
        return ((self._grid // 2) ** 2, 4 * channels)

    def initial_latents(self, n: int, generator: torch.Generator | None) -> Tensor:
        channels, side = self.transformer.config.in_channels // 4, self._grid
        noise = randn_tensor((n, channels, side, side), generator=generator, device=self.device, dtype=torch.float32)
        return FluxPipeline._pack_latents(noise, n, channels, side, side)

    def set_timesteps(self, scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int) -> None:
        config, steps = scheduler.config, num_inference_steps
        mu = calculate_shift(
            self.latent_shape()[0],
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(steps, device=self.device, sigmas=sigmas, mu=mu)

    def fits(self, text: str) -> bool:
        """Whether T5 takes ``text`` whole (CLIP, which only gives the pooled vector, truncates)."""
        return len(self.pipe.tokenizer_2(text).input_ids) <= self.max_sequence_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        with torch.set_grad_enabled(grad):
            embeds, pooled, _ = self.pipe.encode_prompt(
                prompts, prompts, device=self.device, max_sequence_length=self.max_sequence_length
            )
        return Conditioning(embeds, {"pooled_projections": pooled})

    def denoise(self, sample: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        transformer = self.transformer
        dtype, device = transformer.dtype, sample.device
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((len(sample),), self.distilled_guidance, device=device, dtype=torch.float32)
        side = self._grid // 2
        return transformer(
            hidden_states=sample.to(dtype),
            timestep=timesteps.to(dtype) / 1000,
            guidance=guidance,
            pooled_projections=cond.added["pooled_projections"],
            encoder_hidden_states=cond.embeds,
            txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=FluxPipeline._prepare_latent_image_ids(1, side, side, device, dtype),
            return_dict=False,
        )[0].float()

    def decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        unpacked = FluxPipeline._unpack_latents(latents, self.resolution, self.resolution, self.pipe.vae_scale_factor)
        scaled = unpacked / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(scaled.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)
