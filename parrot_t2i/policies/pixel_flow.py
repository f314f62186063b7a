"""A VAE-free flow-matching transformer as a policy: the mini world's flow model (``builtin:mini-flow``).

It is SD3's architecture without the VAE and with one text encoder: an ``SD3Transformer2DModel``
denoising 32×32 RGB pixels directly (patch 4: 64 image tokens), conditioned on a transformers
``CLIPTextModel``'s last hidden states (tokens) and pooled output (``pooled_projections``), sampled
with ``FlowMatchEulerDiscreteScheduler``. It is to SD3 what the mini UNet is to SD 1.5: the same
classes, so the flow chain, LoRA, the KL and every objective run on it on a CPU in minutes.

Saved in the diffusers folder layout (``transformer/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``, ``model_index.json`` naming ``ParrotPixelFlowPipeline``); ``save_pixel_flow``
writes it and ``load_policy`` recognises it. Its LoRA is saved in the SD3 transformer layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from transformers import AutoTokenizer, CLIPTextModel

from ..builtin import resolve
from ..diffusion import Conditioning
from ..errors import missing_weights_error
from ..flow import FlowSampler
from .flow_transformer import FlowTransformerPolicy

PIPELINE = "ParrotPixelFlowPipeline"  # no VAE, one text encoder: not loadable as a StableDiffusion3Pipeline


@dataclass
class PixelFlowModel:
    """The components, held as a pipeline holds them (``FlowTransformerPolicy`` reads ``transformer``,
    ``scheduler`` and ``vae``)."""

    transformer: SD3Transformer2DModel
    text_encoder: CLIPTextModel
    tokenizer: AutoTokenizer
    scheduler: FlowMatchEulerDiscreteScheduler
    vae: None = None

    def to(self, device: torch.device | str) -> PixelFlowModel:
        self.transformer.to(device)
        self.text_encoder.to(device)
        return self


def save_pixel_flow(path: str | Path, model: PixelFlowModel) -> Path:
    """Save a pixel-space flow model in the diffusers folder layout ``PixelFlowPolicy`` loads."""
    path = Path(path)
    for name in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        getattr(model, name).save_pretrained(path / name)
    index = {
        "_class_name": PIPELINE,
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", type(model.tokenizer).__name__],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


class PixelFlowPolicy(FlowTransformerPolicy):
    pipeline_class = StableDiffusion3Pipeline  # for save_lora_weights: the same transformer, the same layout
    lora_targets = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, torch_dtype: torch.dtype = torch.float32, sampler: FlowSampler = "sde"
    ) -> PixelFlowPolicy:
        source = resolve(name_or_path, "t2i")
        try:
            model = PixelFlowModel(
                SD3Transformer2DModel.from_pretrained(source, subfolder="transformer", torch_dtype=torch_dtype),
                CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=torch_dtype),
                AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
                FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler"),
            )
        except OSError as err:
            raise missing_weights_error(source, err) from None
        for module in (model.transformer, model.text_encoder):
            module.requires_grad_(False).eval()
        return cls(model, model.transformer.config.sample_size, sampler=sampler)

    def latent_shape(self) -> tuple[int, int, int]:
        return (self.transformer.config.in_channels, self.resolution, self.resolution)

    def initial_latents(self, n: int, generator: torch.Generator | None) -> Tensor:
        return randn_tensor((n, *self.latent_shape()), generator=generator, device=self.device, dtype=torch.float32)

    def set_timesteps(self, scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int) -> None:
        scheduler.set_timesteps(num_inference_steps, device=self.device)

    def fits(self, text: str) -> bool:
        tokenizer = self.pipe.tokenizer
        return len(tokenizer(text).input_ids) <= tokenizer.model_max_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        with torch.set_grad_enabled(grad):
            out = self.pipe.text_encoder(ids)
        return Conditioning(out.last_hidden_state, {"pooled_projections": out.pooler_output})

    def denoise(self, sample: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        return self.transformer(
            hidden_states=sample.to(self.transformer.dtype),
            timestep=timesteps,
            encoder_hidden_states=cond.embeds,
            **cond.added,
            return_dict=False,
        )[0].float()

    def decode(self, latents: Tensor) -> Tensor:
        """Pixels in [−1, 1] to images in [0, 1]: there is no VAE."""
        return (latents.float() / 2 + 0.5).clamp(0, 1)
