"""Stable Diffusion 3 / 3.5 as a policy: ``SD3Transformer2DModel`` behind ``FlowTransformerPolicy``.

Prompts are encoded by diffusers' own ``StableDiffusion3Pipeline.encode_prompt`` (two CLIPs'
penultimate states concatenated and padded to the T5 width, T5's states after them, the CLIPs'
pooled projections as ``pooled_projections``), so the conditioning is exactly the pipeline's; T5
is optional (``t5=False``: zeros in its place, as the pipeline does). Latents are (C, H/8, W/8)
images; the deterministic sampler is the pipeline's Euler chain (tested equal to it on a tiny SD3).

LoRA goes on the attention projections of every joint block (both streams, as diffusers' SD3 LoRA
training script targets them), saved in the layout ``StableDiffusion3Pipeline.load_lora_weights`` reads.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..diffusion import Conditioning
from ..flow import FlowSampler
from .flow_transformer import FlowTransformerPolicy


class SD3Policy(FlowTransformerPolicy):
    pipeline_class = StableDiffusion3Pipeline

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        torch_dtype: torch.dtype = torch.float32,
        t5: bool = True,
        resolution: int | None = None,
        sampler: FlowSampler = "sde",
    ) -> SD3Policy:
        """An SD3 / SD3.5 folder or hub id; ``t5=False`` loads it without its T5 encoder;
        ``resolution`` defaults to the pipeline's (the transformer's sample size × the VAE's factor)."""
        without_t5 = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
        pipe = cls.load_pipeline(name_or_path, torch_dtype, **without_t5)
        return cls(pipe, resolution or pipe.default_sample_size * pipe.vae_scale_factor, sampler=sampler)

    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.pipe.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    def initial_latents(self, n: int, generator: torch.Generator | None) -> Tensor:
        return randn_tensor((n, *self.latent_shape()), generator=generator, device=self.device, dtype=torch.float32)

    def set_timesteps(self, scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int) -> None:
        """As the pipeline sets them: with the resolution-dependent shift μ where the scheduler uses one."""
        shift = {}
        if scheduler.config.get("use_dynamic_shifting"):
            _, height, width = self.latent_shape()
            patch = self.transformer.config.patch_size
            shift["mu"] = calculate_shift(
                (height // patch) * (width // patch),
                scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096),
                scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(num_inference_steps, device=self.device, **shift)

    def fits(self, text: str) -> bool:
        """Whether the CLIP encoders take ``text`` whole (T5 takes longer prompts)."""
        return len(self.pipe.tokenizer(text).input_ids) <= self.pipe.tokenizer.model_max_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        with torch.set_grad_enabled(grad):
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompts, prompts, prompts, device=self.device, do_classifier_free_guidance=False
            )
        return Conditioning(embeds, {"pooled_projections": pooled})

    def denoise(self, sample: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        return self.transformer(
            hidden_states=sample.to(self.transformer.dtype),
            timestep=timesteps,
            encoder_hidden_states=cond.embeds,
            **cond.added,
            return_dict=False,
        )[0].float()

    def decode(self, latents: Tensor) -> Tensor:
        vae = self.pipe.vae
        scaled = latents / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(scaled.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)
