"""Pre-training of the mini world's flow-matching model: ``parrot mini train-flow`` (``builtin:mini-flow``).

SD3's recipe at the mini world's scale: an ``SD3Transformer2DModel`` on 32×32 RGB pixels (patch 4,
four joint blocks, width 128) learns the velocity v = ε − x₀ of the straight path
x_σ = (1 − σ)·x₀ + σ·ε, with σ drawn logit-normally (SD3, Esser et al. 2024, §3.1) and captions
dropped 10% of the time for classifier-free guidance; EMA weights. The text encoder starts from the
shipped mini UNet model's (it already knows the world's words) and is trained jointly. Unlike the
ε-prediction UNet, a velocity target carries x₀ at full weight even at σ = 1, so the background
follows the prompt without a second phase (docs/MINI_WORLD.md, "The T2I model").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from torch import nn
from transformers import AutoTokenizer, CLIPTextModel

from ..config import ConfigError
from ..fit import FitConfig, fit, step_generator
from ..policies.pixel_flow import PixelFlowModel, save_pixel_flow
from . import weights_path
from .nets import write_model_card
from .world import RESOLUTION, random_scene, render, training_caption

CARD = (
    "Pixel-space SD3-style flow-matching model for 32×32 procedural scenes: diffusers SD3Transformer2DModel "
    "(patch {patch}, {layers} joint blocks, width 128) + transformers CLIPTextModel + the mini word-level tokenizer. "
    "Load with parrot_t2i.policies.load_policy('builtin:mini-flow')."
)


@dataclass
class FlowTrainConfig:
    steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 300
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    num_layers: int = 4  # joint blocks: 8 take 0.8 s a step on 2 idle cores
    heads: int = 4
    head_dim: int = 32
    patch_size: int = 4  # 64 image tokens: 0.5 s a step on 2 idle cores (patch 2, 256 tokens: 1.6 s)
    train_text_encoder: bool = True  # False keeps the UNet model's text encoder as it is (SD3 freezes its own)
    seed: int = 0

    def __post_init__(self):
        if self.patch_size < 1 or RESOLUTION % self.patch_size:
            raise ConfigError(f"the patch size must divide the {RESOLUTION}-pixel image side (got {self.patch_size})")
        if self.num_layers < 1:
            raise ConfigError(f"the transformer needs at least one joint block (got {self.num_layers} layers)")


def build_model(cfg: FlowTrainConfig) -> PixelFlowModel:
    """A fresh transformer, the shipped mini text encoder and tokenizer, and the Euler scheduler."""
    torch.manual_seed(cfg.seed)
    base = weights_path("t2i")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    width = text_encoder.config.hidden_size
    transformer = SD3Transformer2DModel(
        sample_size=RESOLUTION,
        patch_size=cfg.patch_size,
        in_channels=3,
        out_channels=3,
        num_layers=cfg.num_layers,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads,
        joint_attention_dim=width,
        caption_projection_dim=cfg.heads * cfg.head_dim,
        pooled_projection_dim=width,
        pos_embed_max_size=RESOLUTION // cfg.patch_size,
    )
    return PixelFlowModel(
        transformer,
        text_encoder,
        AutoTokenizer.from_pretrained(base, subfolder="tokenizer"),
        FlowMatchEulerDiscreteScheduler(shift=1.0),  # 32×32 pixels: no resolution shift
    )


class _Trained(nn.Module):
    """The two trained components under one module, so one optimiser and one EMA cover both."""

    def __init__(self, model: PixelFlowModel, train_text_encoder: bool = True):
        super().__init__()
        self.transformer, self.text_encoder = model.transformer, model.text_encoder
        self.text_encoder.requires_grad_(train_text_encoder)  # fit() optimises what requires a gradient


def train_flow(out: str | Path, work_dir: str | Path, cfg: FlowTrainConfig | None = None, resume: bool = True) -> Path:
    """Train from scratch (or resume from ``work_dir``) and save the final EMA model at ``out``."""
    cfg = cfg or FlowTrainConfig()
    model = build_model(cfg)
    trained = _Trained(model, cfg.train_text_encoder)
    fit_cfg = FitConfig(
        steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        ema_decay=cfg.ema_decay,
        seed=cfg.seed,
    )
    loss = flow_matching_loss(trained, model.tokenizer, cfg)
    fit(trained, loss, fit_cfg, Path(work_dir), desc="mini flow", resume=resume)
    save_pixel_flow(out, model)
    command = "parrot mini train-flow"
    if cfg.patch_size != FlowTrainConfig.patch_size:
        command += f" --patch-size {cfg.patch_size}"
    if cfg.num_layers != FlowTrainConfig.num_layers:
        command += f" --layers {cfg.num_layers}"
    if not cfg.train_text_encoder:
        command += " --freeze-text-encoder"
    card = CARD.format(patch=cfg.patch_size, layers=cfg.num_layers)
    write_model_card(out, "Mini-world flow-matching model", card, command)
    return Path(out)


def flow_matching_targets(images: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """(x_σ, v): the point of the straight path at σ (per sample) and the velocity ε − x₀ to learn."""
    s = sigma.reshape(-1, *([1] * (images.ndim - 1)))
    return (1 - s) * images + s * noise, noise - images


def flow_matching_loss(model: _Trained, tokenizer, cfg: FlowTrainConfig):
    """The velocity MSE of one step's batch (scenes drawn from the seed and the step)."""

    def loss_fn(step: int):
        generator = step_generator(cfg.seed, step)
        rng = random.Random(cfg.seed * 1_000_003 + step)
        scenes = [random_scene(rng) for _ in range(cfg.batch_size)]
        images = render(scenes, generator) * 2 - 1  # (B, 3, 32, 32) in [-1, 1]
        captions = ["" if rng.random() < cfg.caption_dropout else training_caption(s, rng) for s in scenes]
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        noise = torch.randn(images.shape, generator=generator)
        sigma = torch.sigmoid(torch.randn(cfg.batch_size, generator=generator))  # logit-normal (0, 1)
        noisy, velocity = flow_matching_targets(images, noise, sigma)
        with torch.set_grad_enabled(cfg.train_text_encoder):
            text = model.text_encoder(ids)
        pred = model.transformer(
            hidden_states=noisy,
            timestep=sigma * 1000,
            encoder_hidden_states=text.last_hidden_state,
            pooled_projections=text.pooler_output,
            return_dict=False,
        )[0]
        return F.mse_loss(pred, velocity), {}

    return loss_fn
