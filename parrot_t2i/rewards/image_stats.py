"""Cheap image-statistic rewards: no model, no prompt. Useful for smoke tests and as DDPO's
classic compressibility objectives.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import WeightFree, register_reward


@register_reward("brightness")
class Brightness(WeightFree):
    """Mean pixel value in [0, 1]."""

    name = "brightness"

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return images.float().mean(dim=(1, 2, 3))


@register_reward("colorfulness")
class Colorfulness(WeightFree):
    """Hasler & Süsstrunk (2003) colourfulness, M = σ_rgyb + 0.3·μ_rgyb, on [0, 1] pixels.

    (The original is stated on 0–255 pixels; it is the same measure divided by 255.)
    """

    name = "colorfulness"

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        r, g, b = images.float().flatten(2).unbind(1)  # each (B, H*W)
        rg, yb = r - g, 0.5 * (r + g) - b
        sigma = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt()
        mu = (rg.mean(1).square() + yb.mean(1).square()).sqrt()
        return sigma + 0.3 * mu


def jpeg_kilobytes(images: Tensor, quality: int = 95) -> Tensor:
    """Size of each image as a JPEG at ``quality``, in kB (DDPO's measure)."""
    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


@register_reward("jpeg_compressibility")
class JpegCompressibility(WeightFree):
    """−(JPEG size in kB): smaller files score higher (DDPO). Negative values: see docs on scales."""

    name = "jpeg_compressibility"

    def __init__(self, quality: int = 95):
        self.quality = quality

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return -jpeg_kilobytes(images, self.quality)


@register_reward("jpeg_incompressibility")
class JpegIncompressibility(JpegCompressibility):
    """+(JPEG size in kB): detailed, high-entropy images score higher (DDPO)."""

    name = "jpeg_incompressibility"

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return jpeg_kilobytes(images, self.quality)
