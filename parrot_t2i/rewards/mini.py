"""The mini world's four rewards, standing in for the paper's four (see docs/MINI_WORLD.md).

- ``mini_alignment`` (paper: CLIP ViT-B/32 score): cosine between the image and the *original*
  prompt in the project's contrastively trained dual encoder.
- ``mini_preference`` (paper: a preference model trained on Pick-a-Pic): a Bradley–Terry model fitted
  to synthetic pairwise choices; σ(s(x) − s̄), the probability x is preferred over a typical image.
- ``mini_aesthetic`` (paper: VILA-R), analytic: figure–ground contrast, crispness and rule-of-thirds
  composition.
- ``mini_sentiment`` (paper: positive-class probability of a sentiment classifier), analytic:
  bright, warm, colourful images read as positive.

A fifth, ``mini_detail``, is not one of the paper's: a hard, rarely met reward (crisp stripes on a
large subject, 5–8% of the base model's images), the kind users report stalling under a
weighted sum (flow_grpo#142), for the study of when Pareto selection pays (docs/MINI_WORLD.md).

All map into [0, 1] (alignment into [−1, 1], in practice [0, 1]) so that no reward dominates
Parrot's reward-weighted update by scale alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import ConfigError
from .base import WeightFree, load_once, register_reward

STRIPE_PERIOD = 5.0  # px along x + y: the renderer's diagonal bands (mini/world.py)
THIRDS = torch.tensor([32 / 3, 64 / 3])  # rule-of-thirds lines of a 32-px image, in pixel units


def _mini_resolution(images: Tensor) -> Tensor:
    """The learned judges read 32×32 images; other sizes are resized first (bilinear with antialiasing)."""
    from ..mini.world import RESOLUTION

    images = images.float()
    if images.shape[-1] != RESOLUTION or images.shape[-2] != RESOLUTION:
        images = torch.nn.functional.interpolate(
            images, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False
        )
    return images


def _luma(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, H, W) Rec. 601 luma, the brightness both analytic rewards read."""
    return images[:, 0] * 0.299 + images[:, 1] * 0.587 + images[:, 2] * 0.114


def brightness_and_chroma(images: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) in [0, 1] -> mean luma (B,) and mean chroma, max − min over channels (B,)."""
    return _luma(images).mean((1, 2)), (images.amax(1) - images.amin(1)).mean((1, 2))


def _source(component: str, model: str | None) -> str:
    """The model folder: the given one, or the shipped mini-world weights of ``component``."""
    from ..mini import weights_path

    return model or str(weights_path(component))


@register_reward("mini_alignment")
class MiniAlignment:
    """Mini world text-image alignment: cosine similarity in the mini dual encoder (≈ CLIP score)."""

    name = "mini_alignment"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, device="cpu", cache: dict | None = None) -> MiniAlignment:
        from transformers import AutoTokenizer

        from ..mini.nets import AlignmentModel

        source = _source("alignment", model)
        net = load_once(
            cache, ("mini_alignment", source, str(device)), lambda: AlignmentModel.from_pretrained(source).eval()
        )
        return cls(net.to(device), AutoTokenizer.from_pretrained(source))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(device)
        text = self.model.embed_text(tokens.input_ids, tokens.attention_mask)
        return (self.model.embed_images(_mini_resolution(images.to(device))) * text).sum(-1)


@register_reward("mini_preference")
class MiniPreference:
    """Mini world human preference: Bradley–Terry model of synthetic raters (≈ PickScore)."""

    name = "mini_preference"

    def __init__(self, model):
        self.model = model

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, device="cpu", cache: dict | None = None) -> MiniPreference:
        from ..mini.nets import PreferenceModel

        source = _source("preference", model)
        net = load_once(
            cache, ("mini_preference", source, str(device)), lambda: PreferenceModel.from_pretrained(source).eval()
        )
        return cls(net.to(device))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        images = images.to(next(self.model.parameters()).device)
        return torch.sigmoid(self.model(_mini_resolution(images)) - self.model.reference)


def figure_ground(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel saliency (B, H, W): colour distance to the background, estimated as the median
    colour of the 1-px border; and that background colour (B, 3)."""
    border = torch.cat(
        [images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], -1
    )  # (B, 3, ring)
    background = border.median(-1).values
    saliency = (images - background[..., None, None]).norm(dim=1) / 3**0.5
    return saliency, background


@register_reward("mini_aesthetic")
class MiniAesthetic(WeightFree):
    """Mini world aesthetics (analytic): mean of contrast, crispness and rule-of-thirds composition."""

    name = "mini_aesthetic"

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        images = images.float()
        saliency, _ = figure_ground(images)
        contrast = (saliency.flatten(1).quantile(0.95, dim=1) / 0.6).clamp(max=1)
        luma = _luma(images)
        # RMS (not mean-absolute) gradient: blurring an edge keeps its total variation but
        # spreads it over more pixels, which lowers the mean square.
        gradient = (luma[:, 1:, :-1] - luma[:, :-1, :-1]).square() + (luma[:, :-1, 1:] - luma[:, :-1, :-1]).square()
        crispness = torch.tanh(gradient.flatten(1).mean(1).sqrt() / 0.05)
        # Composition: the salient mass's centroid near a thirds line scores 1, dead centre 0.
        side = images.shape[-1]
        coords = torch.arange(side, device=images.device, dtype=torch.float32) + 0.5
        mass = saliency.flatten(1).sum(1).clamp(min=1e-6)
        cx = (saliency.sum(1) * coords).sum(1) / mass
        cy = (saliency.sum(2) * coords).sum(1) / mass
        thirds = THIRDS.to(images.device) * side / 32
        distance = torch.minimum((cx[:, None] - thirds).abs().amin(1), (cy[:, None] - thirds).abs().amin(1))
        composition = (1 - distance / (side / 6)).clamp(0, 1)
        return (contrast + crispness + composition) / 3


@register_reward("mini_sentiment")
class MiniSentiment(WeightFree):
    """Mini world image sentiment (analytic): P(positive) from brightness, warmth and colourfulness."""

    name = "mini_sentiment"

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        images = images.float()
        r, _, b = images.unbind(1)
        brightness, chroma = brightness_and_chroma(images)
        warmth = (r - b).mean((1, 2))
        return torch.sigmoid(6 * (brightness - 0.5) + 4 * warmth + 4 * (chroma - 0.2))


def stripe_energy(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B,): the magnitude of the luma's Fourier coefficient at the stripes' frequency.

    |mean over pixels of (L − mean L)·exp(2πi (x + y) / 5)|, the period in 32-px units. It does not
    depend on where the subject is (the phase), and it is A/2 for an image that is all stripes of
    amplitude A: a large, sharp, vivid striped subject reaches ≈ 0.012, blur (σ = 1 px keeps ≈ 20% of
    this frequency) and small or plain subjects average below 0.005 (rendered scenes).
    """
    luma = _luma(_mini_resolution(images))
    luma = luma - luma.mean((1, 2), keepdim=True)
    coords = torch.arange(luma.shape[-1], device=luma.device, dtype=torch.float32) + 0.5
    phase = 2 * torch.pi * (coords[:, None] + coords[None, :]) / STRIPE_PERIOD
    real, imaginary = (luma * phase.cos()).mean((1, 2)), (luma * phase.sin()).mean((1, 2))
    return torch.hypot(real, imaginary)


@register_reward("mini_detail")
class MiniDetail(WeightFree):
    """A hard reward (not the paper's): σ((stripe energy − threshold) / width), crisp stripe detail.

    It stands in for the rewards that stall when summed with easier ones (an element that must be
    present, text that must be legible): at the default threshold 5–8% of the base model's images
    score above 0.5 and the mean is 0.08–0.12 (CFG 5, all identifiers, 10–20 steps), so most groups
    of 8 hold no success at all. All else equal, stripes cost the preference reward (its raters like
    plain subjects) and sentiment (dark bands).
    """

    name = "mini_detail"

    def __init__(self, threshold: float = 0.010, width: float = 0.002):
        if width <= 0:
            raise ConfigError(f"reward mini_detail: width must be positive (got {width})")
        self.threshold, self.width = threshold, width

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return torch.sigmoid((stripe_energy(images) - self.threshold) / self.width)
