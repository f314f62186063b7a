"""Tiny random models the tests build from configs with the real classes and save for
``from_pretrained``: SDXL, SD3, FLUX.1, CLIP (the reward backbones), a GPT-2 PEN, a ViT classifier
and BLIP.
The package keeps only what ``builtin:tiny`` needs (parrot_t2i/tiny.py); these are the tests' own."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from parrot_t2i.tiny import (
    byte_alphabet,
    keeps_global_rng,
    sd_ddim_scheduler,
    small_text_encoder,
    tiny_tokenizer,
    tiny_vae,
)


@keeps_global_rng
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
    scheduler = sd_ddim_scheduler()
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(sample_size),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path)
    return path


@keeps_global_rng
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


@keeps_global_rng
def build_tiny_pen(path: str | Path, *, seed: int = 0, template: str = "promptist") -> Path:
    """A tiny random GPT-2 causal LM with a byte-level tokenizer (no merges), saved for ``from_pretrained``.

    It stands in for hub PENs such as microsoft/Promptist in tests: same classes, same loading,
    sampling and LoRA code paths; its text is random bytes.
    """
    import json

    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    from parrot_t2i.pen import TEMPLATE_FILE, TEMPLATES

    torch.manual_seed(seed)
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
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


@keeps_global_rng
def build_tiny_vit(path: str | Path, *, seed: int = 0) -> Path:
    """A tiny random ViT image classifier with labels negative / neutral / positive and its processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    path = Path(path)
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "red",
    "circle",
    "cat",
    "blue",
    "square",
    "on",
    "the",
    "night",
    "city",
    "at",
]


@keeps_global_rng
def build_tiny_blip(root: str | Path, *, seed: int = 0):
    """(BlipForImageTextRetrieval, ImageReward-shaped score head, BERT tokenizer), tiny and random:
    the ImageReward tests write them in the original checkpoint layout and convert them back."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval

    from parrot_t2i.rewards.clip import ScoreHead

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(seed)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        encoder_hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
        bos_token_id=None,
        sep_token_id=None,
    )
    vision = dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-6,
    )
    config = BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)
    return BlipForImageTextRetrieval(config).eval(), ScoreHead(32).eval(), tokenizer


def flow_vae(latent_channels: int):
    """The one-level VAE of diffusers' SD3 / FLUX tests (no downsampling: latents C×S×S for S×S
    images), with SD3's shift and scaling factors."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


@keeps_global_rng
def build_tiny_sd3(path: str | Path, *, seed: int = 0, hidden_size: int = 32, t5: bool = False) -> Path:
    """A tiny random ``StableDiffusion3Pipeline`` folder at diffusers' own test sizes: an
    ``SD3Transformer2DModel`` (one joint block, patch 1, latents 4×32×32), two CLIP text encoders with
    projections, a T5 encoder only with ``t5`` (SD3 runs without it: zeros in its place), a VAE and
    the flow-matching Euler scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizers, tokenizer_3 = (tiny_tokenizer(), tiny_tokenizer()), tiny_t5_tokenizer()
    encoders = []
    for tokenizer in tokenizers:
        config = small_text_encoder(tokenizer, hidden_size).config
        config.projection_dim = hidden_size
        encoders.append(CLIPTextModelWithProjection(config))
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=2 * hidden_size,  # the two CLIPs' hidden states, concatenated (no T5)
        pooled_projection_dim=2 * hidden_size,  # and their pooled projections
        out_channels=4,
    )
    vae = flow_vae(latent_channels=4)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=tokenizers[0],
        text_encoder_2=encoders[1],
        tokenizer_2=tokenizers[1],
        text_encoder_3=tiny_t5_encoder(tokenizer_3, 2 * hidden_size) if t5 else None,  # T5's width: the CLIPs'
        tokenizer_3=tokenizer_3 if t5 else None,
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def tiny_t5_tokenizer():
    """A T5 tokenizer built offline: a Unigram model over lower-case letters, digits and the
    punctuation prompts use, with T5's special tokens (pad 0, eos 1, unk 2) and its ``</s>`` suffix."""
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    symbols = string.ascii_lowercase + string.digits + " <>,.-'!?"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in symbols] + [("▁" + c, -2.5) for c in string.ascii_lowercase]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )


def tiny_t5_encoder(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    )


@keeps_global_rng
def build_tiny_flux(path: str | Path, *, seed: int = 0, guidance_embeds: bool = True, hidden_size: int = 32) -> Path:
    """A tiny random ``FluxPipeline`` folder at diffusers' own test sizes: a ``FluxTransformer2DModel``
    (one double and one single block, guidance-distilled like FLUX.1-dev unless ``guidance_embeds``
    is false), a CLIP (pooled) and a T5 (tokens) text encoder, a VAE with one level (latents 1×S×S for
    S×S images, packed to (S/2)² tokens of 4) and the shifted flow-matching Euler scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer()
    text_encoder = CLIPTextModel(small_text_encoder(tokenizer, hidden_size).config)
    text_encoder_2 = tiny_t5_encoder(tokenizer_2, hidden_size)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=hidden_size,  # T5's width
        pooled_projection_dim=hidden_size,  # CLIP's
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    )
    vae = flow_vae(latent_channels=1)
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    path = Path(path)
    pipe.save_pretrained(path)
    return path
