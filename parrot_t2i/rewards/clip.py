"""CLIP-family rewards on real models: CLIP score, PickScore, HPSv2, the LAION aesthetic predictor
and CLIP zero-shot sentiment (what each stands in for: docs/REAL_MODELS.md).

Every reward here
- loads by hub id or local folder through transformers' own ``from_pretrained``, in its own
  ``from_pretrained`` onto the given device; two rewards built with one cache (``build_rewards``)
  on the same CLIP share one copy;
- preprocesses in torch on the model's device with the model's own processor settings (resize with
  the processor's interpolation and antialiasing, centre crop, mean/std), which matches the
  transformers processor to about 1/255 without a round trip through PIL;
- runs without gradients, in float32, float16 or bfloat16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ParrotError, missing_weights_error
from .base import load_once, register_reward

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_dtype(reward: str, dtype: str) -> None:
    """A reward's ``dtype`` argument must name one of ``DTYPES``; checked when the reward is built."""
    if dtype not in DTYPES:
        raise ParrotError(f"reward {reward!r}: dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")


@dataclass(frozen=True)
class Preprocess:
    """An image processor's resize, crop and normalisation, applied in torch."""

    size: int | tuple[int, int]  # shortest side (int), or an exact (height, width)
    crop: int | None  # centre crop side; None: no crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # "bicubic", "bilinear" or "nearest"

    @classmethod
    def from_processor(cls, processor) -> Preprocess:
        """The settings of a transformers image processor (CLIP-, ViT-, BLIP-style)."""
        size = processor.size
        side = size.get("shortest_edge") if hasattr(size, "get") else None
        resize = int(side) if side else (int(size["height"]), int(size["width"]))
        crop = None
        if getattr(processor, "do_center_crop", False):
            crop = int(processor.crop_size["height"])
        resample = int(getattr(processor, "resample", 3))
        mean, std = (processor.image_mean, processor.image_std) if processor.do_normalize else ((0.0,) * 3, (1.0,) * 3)
        return cls(
            resize, crop, tuple(mean), tuple(std), {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(resample, "bicubic")
        )


def clip_preprocess(images: Tensor, p: Preprocess) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> normalised model input, as the transformers processor computes it.

    Shortest side to ``p.size`` (the other side truncated with int(), as transformers does) or an
    exact (height, width); antialiased interpolation, clamped to [0, 1] (the processor rounds to
    uint8); centre crop with top-left offset (H − crop) // 2; then (x − mean) / std.
    """
    h, w = images.shape[-2:]
    if isinstance(p.size, tuple):
        new_h, new_w = p.size
    else:
        new_h, new_w = (p.size, int(p.size * w / h)) if h <= w else (int(p.size * h / w), p.size)
    smooth = p.interpolation != "nearest"
    x = F.interpolate(
        images.float(),
        size=(new_h, new_w),
        mode=p.interpolation,
        antialias=smooth,
        **({"align_corners": False} if smooth else {}),
    ).clamp(0, 1)
    if p.crop is not None:
        top, left = (new_h - p.crop) // 2, (new_w - p.crop) // 2
        x = x[..., top : top + p.crop, left : left + p.crop]
    mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def image_processor(source: str):
    """A source's image processor, PIL-backed where available (only its settings are read, and the
    PIL classes need no torchvision)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, backend="pil")
    except (TypeError, ValueError):  # transformers before 5 has no backend choice
        return AutoImageProcessor.from_pretrained(source)


@dataclass(frozen=True)
class Clip:
    """A loaded CLIP: the model, its tokenizer and its image preprocessing."""

    model: object  # transformers.CLIPModel
    tokenizer: object
    preprocess: Preprocess

    @property
    def device(self) -> torch.device:
        return self.model.device


def load_frozen(model_class, source: str, dtype: str, device: str | torch.device):
    """``model_class.from_pretrained(source)`` in ``dtype`` on ``device``, in eval mode and without
    gradients (a reward model is only ever evaluated); safetensors only."""
    model = model_class.from_pretrained(source, torch_dtype=DTYPES[dtype], use_safetensors=True)
    return model.to(device).eval().requires_grad_(False)


def load_clip(
    source: str, processor_source: str | None, dtype: str, device: str | torch.device, cache: dict | None = None
) -> Clip:
    """A CLIP from ``source`` (tokenizer and processor settings from ``processor_source`` if given), or
    the one ``cache`` already holds for the same arguments."""

    def load() -> Clip:
        from transformers import AutoTokenizer, CLIPModel

        try:
            model = load_frozen(CLIPModel, source, dtype, device)
            processor_from = processor_source or source
            tokenizer = AutoTokenizer.from_pretrained(processor_from)
            preprocess = Preprocess.from_processor(image_processor(processor_from))
        except OSError as err:
            raise missing_weights_error(source, err) from None
        return Clip(model, tokenizer, preprocess)

    return load_once(cache, ("clip", source, processor_source, dtype, str(device)), load)


def _projected(features) -> Tensor:
    """transformers 5 returns an output object (the projection in ``pooler_output``), 4.x a tensor."""
    return getattr(features, "pooler_output", features).float()


class _ClipReward:
    """Shared plumbing: image and text embeddings of one loaded :class:`Clip`."""

    def __init__(self, clip: Clip):
        self.clip = clip

    def image_embeds(self, images: Tensor) -> Tensor:
        """(B, D) L2-normalised projected image embeddings."""
        model = self.clip.model
        pixels = clip_preprocess(images.to(self.clip.device), self.clip.preprocess).to(model.dtype)
        return F.normalize(_projected(model.get_image_features(pixel_values=pixels)), dim=-1)

    def text_embeds(self, texts: list[str]) -> Tensor:
        """(B, D) L2-normalised projected text embeddings; texts padded/truncated to the model's limit."""
        model = self.clip.model
        limit = model.config.text_config.max_position_embeddings
        tokens = self.clip.tokenizer(
            texts, padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
        ).to(self.clip.device)
        return F.normalize(_projected(model.get_text_features(**tokens)), dim=-1)


@register_reward("clip_score")
class ClipScore(_ClipReward):
    """Text-image alignment: cosine of CLIP image and *original* prompt embeddings (the paper's: ViT-B/32)."""

    name = "clip_score"

    @classmethod
    def from_pretrained(
        cls, model: str = "openai/clip-vit-base-patch32", dtype: str = "float32", *, device="cpu", cache=None
    ):
        check_dtype(cls.name, dtype)
        return cls(load_clip(model, None, dtype, device, cache))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)


@register_reward("pickscore")
class PickScore(_ClipReward):
    """Human preference: PickScore v1, logit_scale.exp() · cosine (≈ 20–23 for SD images)."""

    name = "pickscore"

    @classmethod
    def from_pretrained(
        cls,
        model: str = "yuvalkirstain/PickScore_v1",
        processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        dtype: str = "float32",
        *,
        device="cpu",
        cache=None,
    ):
        check_dtype(cls.name, dtype)
        return cls(load_clip(model, processor, dtype, device, cache))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        cosine = (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)
        return self.clip.model.logit_scale.exp().float() * cosine


@register_reward("hpsv2")
class HPSv2(ClipScore):
    """Human preference: HPSv2 / v2.1, the raw cosine of its ViT-H/14 (≈ 0.25–0.33; compare within a prompt).

    ``model`` is a folder written by ``scripts/convert_hpsv2.py`` from the official checkpoint.
    """

    name = "hpsv2"

    @classmethod
    def from_pretrained(cls, model: str | None = None, dtype: str = "float32", *, device="cpu", cache=None):
        if not model:
            raise ParrotError(
                "reward 'hpsv2' needs model=FOLDER: download HPS_v2.1_compressed.pt (xswu/HPSv2) and convert it "
                "once with `python scripts/convert_hpsv2.py HPS_v2.1_compressed.pt --out hpsv2.1`"
            )
        return super().from_pretrained(model, dtype, device=device, cache=cache)


@register_reward("clip_sentiment")
class ClipSentiment(_ClipReward):
    """Image sentiment: CLIP zero-shot P(positive), softmax over positive vs negative label texts."""

    name = "clip_sentiment"

    def __init__(self, clip: Clip, positive: list[str], negative: list[str]):
        super().__init__(clip)
        self.positive, self.negative = positive, negative

    @classmethod
    def from_pretrained(
        cls,
        model: str = "openai/clip-vit-large-patch14",
        positive: tuple[str, ...] | list[str] = (
            "a photo that makes people feel happy",
            "a cheerful, uplifting image",
            "a positive image",
        ),
        negative: tuple[str, ...] | list[str] = (
            "a photo that makes people feel sad",
            "a gloomy, depressing image",
            "a negative image",
        ),
        dtype: str = "float32",
        *,
        device="cpu",
        cache=None,
    ):
        check_dtype(cls.name, dtype)
        if not positive or not negative:  # before loading anything
            raise ParrotError("reward 'clip_sentiment' needs at least one positive and one negative label text")
        return cls(load_clip(model, None, dtype, device, cache), list(positive), list(negative))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        # Each class is the normalised mean of its label embeddings (CLIP's prompt ensembling).
        classes = torch.stack(
            [F.normalize(self.text_embeds(texts).mean(0), dim=-1) for texts in (self.negative, self.positive)]
        )
        logits = self.clip.model.logit_scale.exp().float() * self.image_embeds(images) @ classes.T  # (B, 2)
        return logits.softmax(-1)[:, 1]


HEAD_HELP = (
    "download sac+logos+ava1-l14-linearMSE.pth from LAION's improved-aesthetic-predictor repository, convert it once "
    "with `python scripts/convert_laion_aesthetic.py PTH OUT.safetensors`, and pass args: {head: OUT.safetensors}"
)


class ScoreHead(torch.nn.Module):
    """The linear stack D→1024→128→64→16→1 (no activations upstream) that scores an embedding in both
    the LAION aesthetic predictor v2 (on CLIP image embeddings) and ImageReward (on BLIP's text CLS)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], dim: int | None = None) -> ScoreHead:
        """A head holding ``state`` (input size read from it unless given); a mismatch raises RuntimeError."""
        head = cls(dim or state["layers.0.weight"].shape[1])
        head.load_state_dict(state)
        return head

    def forward(self, embeds: Tensor) -> Tensor:
        return self.layers(embeds).squeeze(-1)


def load_aesthetic_head(path: str, device: str | torch.device) -> ScoreHead:
    from safetensors.torch import load_file

    try:
        head = ScoreHead.from_state_dict(load_file(path))
    except RuntimeError as err:
        raise ParrotError(f"{path} is not a LAION aesthetic head ({str(err).splitlines()[0]}); {HEAD_HELP}") from None
    return head.to(device).eval().requires_grad_(False)


@register_reward("laion_aesthetic")
class LaionAesthetic(_ClipReward):
    """Aesthetics: the LAION aesthetic predictor v2 on L2-normalised CLIP ViT-L/14 image embeddings (~1–10)."""

    name = "laion_aesthetic"

    def __init__(self, clip: Clip, head: ScoreHead):
        super().__init__(clip)
        self.head = head

    @classmethod
    def from_pretrained(
        cls,
        head: str | None = None,
        model: str = "openai/clip-vit-large-patch14",
        dtype: str = "float32",
        *,
        device="cpu",
        cache=None,
    ):
        check_dtype(cls.name, dtype)
        if head is None or not Path(head).is_file():
            raise ParrotError(
                "reward 'laion_aesthetic' needs its head weights "
                f"({'not found: ' + repr(head) if head else 'none given'}): {HEAD_HELP}"
            )
        return cls(load_clip(model, None, dtype, device, cache), load_aesthetic_head(str(head), device))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return self.head(self.image_embeds(images))
