"""Pre-training of the mini world's text-to-image model: ``parrot mini train-t2i``.

The model has exactly the components of Stable Diffusion minus the VAE (it denoises 32×32 RGB
pixels directly): a diffusers ``UNet2DConditionModel`` (1.4M parameters, cross-attention only at
the 8×8 level), a transformers ``CLIPTextModel`` and the mini tokenizer, saved in the diffusers
folder layout, so it loads through the same ``T2IPolicy.from_pretrained`` path as SD 1.5.
Training, in two phases (the route SD 2.x-v and Lin et al. 2024 took):

1. ε-prediction pre-training with min-SNR-γ loss weighting (Hang et al. 2023, γ = 5), EMA weights,
   captions dropped 10% of the time for classifier-free guidance. It learns shapes and colours fast.
2. v-prediction fine-tuning from phase 1's EMA weights. The cosine schedule ends at zero SNR, and
   an image's global colour (the background) is decided in the first, almost pure-noise steps.
   There an ε-model's x₀ estimate is divided by √ᾱ ≈ 0 and its loss barely sees x₀: after phase 1
   the background follows the noise, not the prompt. v-prediction with full weight on x₀ at high
   noise fixes that in a few hundred steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel

from ..fit import FitConfig, fit, step_generator
from ..tiny import save_pixel_pipeline, small_text_encoder
from .nets import write_model_card
from .tokenizer import build_tokenizer
from .world import RESOLUTION, random_scene, render, training_caption

TEXT_DIM = 64
CARD = (
    "Pixel-space Stable-Diffusion-style model for 32×32 procedural scenes: diffusers UNet2DConditionModel "
    "(1.41M parameters, cross-attention at 8×8) + transformers CLIPTextModel + word-level tokenizer with "
    "the reward identifiers <reward 1>…<reward 8> as unseen tokens. Load with parrot_t2i.T2IPolicy.from_pretrained."
)


@dataclass
class T2ITrainConfig:
    pretrain_steps: int = 3500  # phase 1, ε-prediction
    pretrain_horizon: int = 7000  # its cosine learning-rate horizon (phase 1 stops half-way down it)
    finetune_steps: int = 1000  # phase 2, v-prediction
    batch_size: int = 64
    learning_rate: float = 5e-4
    finetune_learning_rate: float = 2e-4
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    seed: int = 0


def build_models(
    seed: int = 0, prediction_type: str = "v_prediction"
) -> tuple[UNet2DConditionModel, CLIPTextModel, object, DDIMScheduler]:
    """Freshly initialised (unet, text_encoder, tokenizer, scheduler) of the mini T2I model."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = small_text_encoder(tokenizer, TEXT_DIM)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    # Trailing spacing starts sampling at t = 999 where the cosine schedule leaves no signal, so
    # generated images have the training images' overall brightness (Lin et al. 2024).
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=True,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )
    return unet, text_encoder, tokenizer, scheduler


class _Denoiser(nn.Module):
    """The two trained components under one module, so one optimiser and one EMA cover both."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder


def train_t2i(out: str | Path, work_dir: str | Path, cfg: T2ITrainConfig | None = None, resume: bool = True) -> Path:
    """Train from scratch (or resume from ``work_dir``) and save the final EMA model at ``out``."""
    cfg = cfg or T2ITrainConfig()
    unet, text_encoder, tokenizer, scheduler = build_models(cfg.seed, prediction_type="epsilon")
    model = _Denoiser(unet, text_encoder)
    phase1 = FitConfig(
        steps=cfg.pretrain_steps,
        horizon=cfg.pretrain_horizon,
        learning_rate=cfg.learning_rate,
        warmup_steps=300,
        ema_decay=cfg.ema_decay,
        seed=cfg.seed,
    )
    fit(
        model,
        _loss(model, tokenizer, scheduler, cfg, "epsilon", offset=0),
        phase1,
        Path(work_dir) / "epsilon",
        desc="mini T2I (1/2: ε)",
        resume=resume,
    )
    scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="v_prediction")
    phase2 = FitConfig(
        steps=cfg.finetune_steps,
        learning_rate=cfg.finetune_learning_rate,
        warmup_steps=100,
        ema_decay=cfg.ema_decay,
        seed=cfg.seed,
    )
    loss = _loss(model, tokenizer, scheduler, cfg, "v_prediction", offset=cfg.pretrain_steps)
    fit(model, loss, phase2, Path(work_dir) / "v_prediction", desc="mini T2I (2/2: v)", resume=resume)
    save_pixel_pipeline(out, model.unet, model.text_encoder, tokenizer, scheduler)
    write_model_card(out, "Mini-world text-to-image model", CARD, "parrot mini train-t2i")
    return Path(out)


def _loss(
    model: _Denoiser, tokenizer, scheduler: DDIMScheduler, cfg: T2ITrainConfig, prediction_type: str, offset: int
):
    """The denoising loss of one step's batch (scenes drawn from the seed and ``offset + step``)."""
    alphas_cumprod = scheduler.alphas_cumprod

    def loss_fn(step: int):
        step += offset  # phase 2 draws fresh batches, not phase 1's again
        generator = step_generator(cfg.seed, step)
        rng = random.Random(cfg.seed * 1_000_003 + step)
        scenes = [random_scene(rng) for _ in range(cfg.batch_size)]
        images = render(scenes, generator) * 2 - 1  # (B, 3, 32, 32) in [-1, 1]
        captions = [training_caption(scene, rng) for scene in scenes]
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        noise = torch.randn(images.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=generator)
        noisy = scheduler.add_noise(images, noise, t)
        pred = model.unet(noisy, t, model.text_encoder(ids, return_dict=False)[0], return_dict=False)[0]
        snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
        if prediction_type == "epsilon":
            target, weight = noise, snr.clamp(max=cfg.snr_gamma) / snr  # min-SNR-γ
        else:
            # v-MSE = x₀-MSE·(SNR + 1): full weight on x₀ at high noise, where the background is
            # decided; clamped to γ on the low-noise side.
            target, weight = scheduler.get_velocity(images, noise, t), (snr + 1).clamp(max=cfg.snr_gamma) / (snr + 1)
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
        return loss, {}

    return loss_fn
