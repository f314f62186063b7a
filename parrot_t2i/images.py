"""Image grids without torchvision: a (B, 3, H, W) batch in [0, 1] -> one tiled image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from .errors import ParrotError


def make_grid(images: Tensor, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images row-major into an (rows·(H+pad)+pad, cols·(W+pad)+pad, 3) uint8 array."""
    n, _, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i, image in enumerate(pixels):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def image_path(path: str | Path) -> Path:
    """Where an image grid goes: ``path`` with ".png" added when it has no extension; a
    ParrotError naming the extensions PIL writes when it has one PIL cannot write."""
    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if path.suffix.lower() not in writable:
        raise ParrotError(
            f"cannot write an image to {str(path)!r}: use one of .png, .jpg, .webp, .bmp, .tif (got {path.suffix!r})"
        )
    return path


def save_grid(images: Tensor, path: str | Path, ncols: int | None = None, min_side: int = 256) -> Path:
    """Save a grid as PNG, upscaled with nearest-neighbour so tiny images stay visible."""
    grid = Image.fromarray(make_grid(images, ncols))
    scale = max(1, math.ceil(min_side / max(grid.size)))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
