"""Tiny random Stable-Diffusion-shaped models, built from configs with the real diffusers and
transformers classes and saved in the standard diffusers folder layout.

Only what ``builtin:tiny`` (the smoke-test model) and the mini world's pipeline need lives here:
the tiny SD model, its tokenizer and text encoder, the pixel-space folder layout. The tests' other
tiny models (SDXL, CLIP, GPT-2 PEN, ViT, BLIP) live with the tests, in tests/tiny_models.py, built
from these pieces. Building is deterministic for a seed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

T = TypeVar("T")


def keeps_global_rng(build: Callable[..., T]) -> Callable[..., T]:
    """Run a builder on a fork of the global torch RNG: it seeds that generator (the models'
    initialisers draw from it), and the caller's random stream must come back untouched."""

    @functools.wraps(build)
    def wrapped(*args, **kwargs) -> T:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            return build(*args, **kwargs)

    return wrapped


def byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: 256 printable stand-ins for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A character-level CLIP tokenizer (byte alphabet, no merges): any text encodes, offline."""
    chars = byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def small_text_encoder(tokenizer, hidden_size: int) -> CLIPTextModel:
    """A freshly initialised 2-layer CLIP text encoder sized to ``tokenizer`` (vocabulary, length, special ids)."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


@keeps_global_rng
def build_tiny_sd(
    path: str | Path,
    *,
    seed: int = 0,
    sample_size: int = 16,
    with_vae: bool = False,
    prediction_type: str = "epsilon",
    hidden_size: int = 32,
) -> Path:
    """Save a tiny text-to-image model at ``path`` and return it.

    Pixel space (``with_vae=False``): the UNet denoises 3×S×S images directly. With a VAE the
    folder is a genuine ``StableDiffusionPipeline`` (latents 4×S×S, images 2S×2S).
    """
    path = Path(path)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = small_text_encoder(tokenizer, hidden_size)
    channels = 4 if with_vae else 3
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden_size,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    scheduler = sd_ddim_scheduler(prediction_type)
    path.mkdir(parents=True, exist_ok=True)
    if with_vae:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=tiny_vae(sample_size),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(path)
        return path
    return save_pixel_pipeline(path, unet, text_encoder, tokenizer, scheduler)


def sd_ddim_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """DDIM with Stable Diffusion 1.x's noise schedule (scaled-linear betas, offset 1)."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def tiny_vae(latent_size: int) -> AutoencoderKL:
    """A two-level VAE: latents 4×S×S for images 2S×2S."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=2 * latent_size,
    )


def save_pixel_pipeline(path: str | Path, unet, text_encoder, tokenizer, scheduler) -> Path:
    """Save a VAE-free (pixel-space) model in the diffusers folder layout that ``T2IPolicy`` loads."""
    path = Path(path)
    for name, component in [
        ("unet", unet),
        ("text_encoder", text_encoder),
        ("tokenizer", tokenizer),
        ("scheduler", scheduler),
    ]:
        component.save_pretrained(path / name)
    index = {
        "_class_name": "ParrotPixelSpacePipeline",  # no VAE: not loadable as a StableDiffusionPipeline
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


BUILTIN = {"tiny": dict(sample_size=16)}  # name -> build_tiny_sd keyword arguments (builtin.py names them)


def cache_dir() -> Path:
    return Path(os.environ.get("PARROT_CACHE", Path.home() / ".cache" / "parrot_t2i"))


def builtin_path(name: str) -> Path:
    """Folder of built-in model ``name``, built on first use (atomically, so concurrent processes are safe)."""
    if name not in BUILTIN:
        raise KeyError(name)
    target = cache_dir() / "builtin" / name
    if not (target / "model_index.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        build_tiny_sd(staging, **BUILTIN[name])
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return target
