"""Tiny random Stable-Diffusion-shaped models, built from configs with the real diffusers and
transformers classes and saved in the standard diffusers folder layout.

They exist so that every code path for real models (``from_pretrained``, text encoding, VAE
decode, LoRA) runs offline in seconds: the tests use them, and ``builtin:tiny`` is the model of the
default CPU job until the trained mini world replaces it. Building is deterministic for a seed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def _keeps_global_rng(build: Callable[..., Path]) -> Callable[..., Path]:
    """Run a builder on a fork of the global torch RNG: it seeds that generator (the models'
    initialisers draw from it), and the caller's random stream must come back untouched."""

    @functools.wraps(build)
    def wrapped(*args, **kwargs) -> Path:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            return build(*args, **kwargs)

    return wrapped


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: 256 printable stand-ins for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A character-level CLIP tokenizer (byte alphabet, no merges): any text encodes, offline."""
    chars = _bytes_to_unicode()
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


@_keeps_global_rng
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
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    path.mkdir(parents=True, exist_ok=True)
    if with_vae:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=_tiny_vae(sample_size),
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


def _tiny_vae(latent_size: int) -> AutoencoderKL:
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


@_keeps_global_rng
def build_tiny_sdxl(
    path: str | Path, *, seed: int = 0, sample_size: int = 8, hidden_size: int = 32, time_embed_dim: int = 8
) -> Path:
    """A tiny random ``StableDiffusionXLPipeline`` folder: two text encoders (the second with a
    projection), a UNet with SDXL's added text-time conditioning, a VAE (images 2S×2S)."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_tokenizer()
    text_encoder = small_text_encoder(tokenizer, hidden_size)
    config_2 = small_text_encoder(tokenizer_2, hidden_size).config
    config_2.projection_dim = hidden_size
    text_encoder_2 = CLIPTextModelWithProjection(config_2)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * hidden_size,  # both encoders' hidden states, concatenated
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + hidden_size,  # 6 time ids + pooled text
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(sample_size),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path)
    return path


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


BUILTIN = {"tiny": dict(sample_size=16)}  # name -> build_tiny_sd keyword arguments


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


@_keeps_global_rng
def build_tiny_clip(
    path: str | Path, *, seed: int = 0, image_size: int = 32, projection_dim: int = 16, hidden_act: str = "quick_gelu"
) -> Path:
    """A tiny random ``CLIPModel`` with tokenizer and image processor, saved for ``from_pretrained``.

    Shaped like the real reward backbones (text and vision towers, projections, logit scale), so
    the CLIP-family rewards run their real loading and scoring code on it offline. OpenAI's CLIPs
    use quick-GELU; the LAION ViT-H/14 family (PickScore, HPSv2) uses ``hidden_act="gelu"``.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text = small_text_encoder(tokenizer, hidden_size=32).config
    text.hidden_act = hidden_act
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        hidden_act=hidden_act,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim)
    )
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(path)
    return path


@_keeps_global_rng
def build_tiny_pen(path: str | Path, *, seed: int = 0, template: str = "promptist") -> Path:
    """A tiny random GPT-2 causal LM with a byte-level tokenizer (no merges), saved for ``from_pretrained``.

    It stands in for hub PENs such as microsoft/Promptist in tests: same classes, same loading,
    sampling and LoRA code paths; its text is random bytes.
    """
    import json

    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    from .pen import TEMPLATE_FILE, TEMPLATES

    torch.manual_seed(seed)
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode())}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    path = Path(path)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / TEMPLATE_FILE).write_text(json.dumps({"template": TEMPLATES.get(template, template)}))
    return path
