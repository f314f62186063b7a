"""ImageReward (Xu et al. 2023) on transformers' BLIP classes, without the image-reward package.

ImageReward is BLIP (ViT-L/16 at 224 px + a BERT-base text encoder with cross-attention to the
image) whose text [CLS] state after cross-attention goes through a linear stack to one score,
normalised as (raw − 0.16717362830052426) / 1.0333394966054072. Prompts are padded/truncated to 35
tokens; images are resized (shortest side 224, bicubic), centre-cropped and normalised with the
CLIP mean/std. transformers' ``BlipForImageTextRetrieval`` holds the same two towers under
almost the same names, so the official checkpoint ports by renaming the vision keys
(``scripts/convert_image_reward.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ParrotError, missing_weights_error
from .base import load_once, register_reward
from .clip import Preprocess, ScoreHead, check_dtype, clip_preprocess, load_frozen

HEAD_FILE = "image_reward_head.safetensors"
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward's score normalisation
MAX_TOKENS = 35
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

_VISION_TOP = {
    "cls_token": "vision_model.embeddings.class_embedding",
    "pos_embed": "vision_model.embeddings.position_embedding",
    "patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "norm.weight": "vision_model.post_layernorm.weight",
    "norm.bias": "vision_model.post_layernorm.bias",
}
_VISION_BLOCK = re.compile(r"^blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_VISION_MODULE = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_KEPT = ("text_encoder.", "vision_proj.", "text_proj.", "itm_head.")


def blip_to_transformers(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Split an ImageReward checkpoint into (BlipForImageTextRetrieval state, score-head state, skipped keys).

    Vision keys follow timm's ViT names and are renamed; the BERT text encoder's names already
    match. Momentum encoders, queues and decoders of BLIP pre-training are skipped.
    """
    blip, head, skipped = {}, {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("mlp."):
            head[key.removeprefix("mlp.")] = value
            continue
        key = key.removeprefix("blip.")
        if key.startswith("visual_encoder."):
            rest = key.removeprefix("visual_encoder.")
            if rest in _VISION_TOP:
                blip[_VISION_TOP[rest]] = value
            elif match := _VISION_BLOCK.match(rest):
                blip[
                    f"vision_model.encoder.layers.{match.group(1)}.{_VISION_MODULE[match.group(2)]}.{match.group(3)}"
                ] = value
            else:
                raise KeyError(f"unexpected ImageReward vision key {key!r}")
        elif key.startswith(_KEPT) and not key.endswith("position_ids"):
            blip[key] = value
        else:
            skipped.append(key)
    return blip, head, skipped


def save_image_reward(state: dict[str, Tensor], config, tokenizer, out: str | Path) -> Path:
    """Write a converted ImageReward folder: the BLIP model, its tokenizer and the score head."""
    from safetensors.torch import save_file
    from transformers import BlipForImageTextRetrieval

    blip, head, _ = blip_to_transformers(state)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in BlipForImageTextRetrieval(config).state_dict().items()}
    needed = {k for k in expected if k.startswith(("vision_model.", "text_encoder."))}
    missing = sorted(needed - set(blip))
    wrong = sorted(k for k in set(blip) & set(expected) if blip[k].shape != expected[k])
    if missing or wrong or not head:
        raise ParrotError(
            f"checkpoint does not fit the BLIP config: missing {missing[:3]}, wrong shape {wrong[:3]}, score head "
            f"{'found' if head else 'missing'}"
        )
    model = BlipForImageTextRetrieval(config)
    model.load_state_dict({k: v for k, v in blip.items() if k in expected}, strict=False)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ScoreHead.from_state_dict(head, config.text_config.hidden_size)  # checks the head's shape
    save_file({k: v.contiguous() for k, v in head.items()}, str(out / HEAD_FILE))
    return out


def _load(source: str, dtype: str, device: str | torch.device):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    try:
        model = load_frozen(BlipForImageTextRetrieval, source, dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise missing_weights_error(source, err) from None
    head = ScoreHead.from_state_dict(load_file(str(Path(source) / HEAD_FILE)), model.config.text_config.hidden_size)
    side = model.config.vision_config.image_size
    return model, tokenizer, head.to(device).eval().requires_grad_(False), Preprocess(side, side, CLIP_MEAN, CLIP_STD)


@register_reward("image_reward")
class ImageReward:
    """Human preference: ImageReward v1.0 (BLIP + MLP), normalised score ≈ 0 ± 1 over its training images."""

    name = "image_reward"

    def __init__(self, model, tokenizer, head: ScoreHead, preprocess: Preprocess):
        self.model, self.tokenizer, self.head, self.preprocess = model, tokenizer, head, preprocess

    @classmethod
    def from_pretrained(cls, model: str | None = None, dtype: str = "float32", *, device="cpu", cache=None):
        if not model or not (Path(model) / HEAD_FILE).is_file():
            raise ParrotError(
                "reward 'image_reward' needs model=FOLDER written by scripts/convert_image_reward.py "
                f"({'not found: ' + repr(model) if model else 'none given'}): "
                "download ImageReward.pt and med_config.json (THUDM/ImageReward) and bert-base-uncased, then "
                "`python scripts/convert_image_reward.py ImageReward.pt --med-config med_config.json --out "
                "image-reward`"
            )
        check_dtype(cls.name, dtype)
        return cls(
            *load_once(cache, ("image_reward", str(model), dtype, str(device)), lambda: _load(model, dtype, device))
        )

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        device = self.model.device
        pixels = clip_preprocess(images.to(device), self.preprocess).to(self.model.dtype)
        image_embeds = self.model.vision_model(pixel_values=pixels).last_hidden_state
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ).to(device)
        text = self.model.text_encoder(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device),
        ).last_hidden_state[:, 0]
        return (self.head(text.float()) - MEAN) / STD
