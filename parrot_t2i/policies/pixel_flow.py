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
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from torch import Tensor
from transformers import AutoTokenizer, CLIPTextModel

from ..builtin import resolve
from ..diffusion import Conditioning
from ..errors import missing_weights_error
from ..flow import FlowSampler
from .sd3 import SD3Policy

PIPELINE = "ParrotPixelFlowPipeline"  # no VAE, one text encoder: not loadable as a StableDiffusion3Pipeline


@dataclass
class PixelFlowModel:
    """The components, held as a pipeline holds them (the policy reads ``transformer``,
    ``scheduler``, ``vae`` and ``vae_scale_factor``)."""

    transformer: SD3Transformer2DModel
    text_encoder: CLIPTextModel
    tokenizer: AutoTokenizer
    scheduler: FlowMatchEulerDiscreteScheduler
    vae: None = None
    vae_scale_factor: int = 1  # pixels: one latent per pixel

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


class PixelFlowPolicy(SD3Policy):
    """``SD3Policy`` (the same transformer: its velocity call, latents, schedule and LoRA layout) on
    pixels, with one CLIP text encoder and no VAE."""

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

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        with torch.set_grad_enabled(grad):
            out = self.pipe.text_encoder(ids)
        return Conditioning(out.last_hidden_state, {"pooled_projections": out.pooler_output})

    def decode(self, latents: Tensor) -> Tensor:
        """Pixels in [−1, 1] to images in [0, 1]: there is no VAE."""
        return (latents.float() / 2 + 0.5).clamp(0, 1)
