"""The mini world's scenes: a procedural generator of 32×32 images and the grammar that describes them.

A scene is one shape on a plain background with four binary style attributes. Images are rendered
as anti-aliased signed-distance fields, batched in torch, so a batch of 64 costs about a
millisecond and the same scenes always give the same pixels. Captions come in two registers:
full captions that name every attribute (what the prompt expansion network learns to write) and
short user prompts ("a red circle", optionally "on a black background").
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

RESOLUTION = 32

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {  # object colours, linear RGB in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.72, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.58, 0.20, 0.80),
}
BACKGROUNDS = {
    "black": (0.04, 0.04, 0.04),
    "white": (0.96, 0.96, 0.96),
    "gray": (0.50, 0.50, 0.50),
    "dark blue": (0.05, 0.10, 0.36),
    "beige": (0.86, 0.78, 0.60),
}
SIZES = {"small": 5.0, "large": 9.0}  # radius in pixels
POSITIONS = {
    "center": (16.0, 16.0),
    "left": (9.0, 16.0),
    "right": (23.0, 16.0),
    "top": (16.0, 9.0),
    "bottom": (16.0, 23.0),
}
# Binary styles: (first, second) words; each changes the image in a way rewards can care about.
STYLES = {
    "saturation": ("vivid", "muted"),  # object colour at full chroma or pulled 60% towards grey
    "pattern": ("plain", "striped"),  # diagonal dark stripes across the object
    "focus": ("sharp", "blurred"),  # Gaussian blur (σ = 1 px) over the whole image
    "lighting": ("bright", "dim"),  # the whole image lifted towards white, or darkened
}

# Which attributes the checker reads and in which vocabulary (class index = position in the tuple).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    **STYLES,
}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    size: str
    position: str
    saturation: str
    pattern: str
    focus: str
    lighting: str

    def labels(self) -> dict[str, int]:
        """Class index of every attribute (for the checker)."""
        return {name: ATTRIBUTES[name].index(getattr(self, name)) for name in ATTRIBUTES}


def random_scene(rng: random.Random, **fixed: str) -> Scene:
    """A uniformly random scene; ``fixed`` pins attributes (e.g. ``colour="red"``)."""
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown scene attributes {sorted(unknown)}")
    return Scene(**{name: fixed.get(name) or rng.choice(values) for name, values in ATTRIBUTES.items()})


# ----------------------------------------------------------------------------- rendering


def _blur_kernel(sigma: float = 1.0) -> Tensor:
    x = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :]).expand(3, 1, 5, 5)


def _shape_sdf(shape: Tensor, px: Tensor, py: Tensor, r: Tensor) -> Tensor:
    """Signed distance (pixels, negative inside) of each scene's shape; px, py are offsets (B, H, W)."""
    r = r[:, None, None]
    circle = torch.sqrt(px**2 + py**2) - r
    square = torch.maximum(px.abs(), py.abs()) - 0.85 * r
    # Upward equilateral triangle as the max of three half-planes (exact near the edges).
    s3 = math.sqrt(3) / 2
    triangle = torch.stack([py - 0.55 * r, -s3 * px - 0.5 * py - 0.55 * r, s3 * px - 0.5 * py - 0.55 * r]).amax(0)
    arm = 0.36 * r
    bar_h = torch.maximum(px.abs() - r, py.abs() - arm)
    bar_v = torch.maximum(px.abs() - arm, py.abs() - r)
    cross = torch.minimum(bar_h, bar_v)
    choices = torch.stack([circle, square, triangle, cross])  # (S, B, H, W)
    return choices.gather(0, shape[None, :, None, None].expand(1, *px.shape))[0]


def render(scenes: list[Scene], generator: torch.Generator | None = None, jitter: bool = True) -> Tensor:
    """Images (B, 3, 32, 32) in [0, 1] for ``scenes``.

    ``jitter`` moves each shape by up to ±1.5 px and scales it by ±8% (drawn from ``generator``),
    so that one caption covers a little family of images, as captions do.
    """
    n = len(scenes)
    idx = lambda name: torch.tensor([ATTRIBUTES[name].index(getattr(s, name)) for s in scenes])
    centre = torch.tensor([POSITIONS[s.position] for s in scenes])  # (B, 2)
    radius = torch.tensor([SIZES[s.size] for s in scenes])
    if jitter:
        centre = centre + (torch.rand(n, 2, generator=generator) - 0.5) * 3.0
        radius = radius * (1 + (torch.rand(n, generator=generator) - 0.5) * 0.16)
    coords = torch.arange(RESOLUTION, dtype=torch.float32) + 0.5
    px = coords[None, None, :] - centre[:, 0, None, None]  # (B, 1, W) -> broadcast below
    py = coords[None, :, None] - centre[:, 1, None, None]
    px, py = px.expand(n, RESOLUTION, RESOLUTION), py.expand(n, RESOLUTION, RESOLUTION)
    coverage = (0.5 - _shape_sdf(idx("shape"), px, py, radius)).clamp(0, 1)[:, None]  # (B, 1, H, W)

    colour = torch.tensor([COLOURS[s.colour] for s in scenes])  # (B, 3)
    grey = (colour @ torch.tensor([0.299, 0.587, 0.114]))[:, None]
    muted = (idx("saturation") == 1)[:, None]
    colour = torch.where(muted, 0.4 * colour + 0.6 * grey, colour)
    colour = colour[:, :, None, None].expand(n, 3, RESOLUTION, RESOLUTION)
    stripes = ((torch.sin(2 * math.pi * (px + py) / 5.0) * 2).clamp(-0.5, 0.5) + 0.5)[:, None]  # soft diagonal bands
    striped = (idx("pattern") == 1)[:, None, None, None]
    colour = torch.where(striped, colour * (1 - 0.6 * stripes), colour)

    background = torch.tensor([BACKGROUNDS[s.background] for s in scenes])[:, :, None, None]
    image = coverage * colour + (1 - coverage) * background
    blurred = F.conv2d(F.pad(image, (2, 2, 2, 2), mode="replicate"), _blur_kernel(), groups=3)
    image = torch.where((idx("focus") == 1)[:, None, None, None], blurred, image)
    dim = (idx("lighting") == 1)[:, None, None, None]
    image = torch.where(dim, 0.65 * image, 0.8 * image + 0.2)
    return image.clamp(0, 1)


# ----------------------------------------------------------------------------- captions


def caption(scene: Scene, include: set[str] | None = None) -> str:
    """Describe ``scene``, naming only the attributes in ``include`` (default: all of them).

    >>> caption(Scene("circle", "red", "dark blue", "small", "left", "vivid", "striped", "sharp", "dim"))
    'a small vivid red circle at the left on a dark blue background, striped, sharp, dim'
    """
    include = set(ATTRIBUTES) if include is None else include
    words = ["a"]
    words += [getattr(scene, a) for a in ("size", "saturation", "colour") if a in include]
    words.append(scene.shape if "shape" in include else "shape")
    if "position" in include:
        words.append(f"at the {scene.position}")
    if "background" in include:
        words.append(f"on a {scene.background} background")
    text = " ".join(words)
    for style in ("pattern", "focus", "lighting"):
        if style in include:
            text += f", {getattr(scene, style)}"
    return text


def short_prompt(scene: Scene, with_background: bool = False) -> str:
    """What a user would type: colour and shape, optionally the background."""
    return caption(scene, {"colour", "shape", "background"} if with_background else {"colour", "shape"})


# How often each attribute is named in a training caption of the T2I model: shape and colour
# almost always (users name them), styles less often, so short prompts are in-distribution.
CAPTION_RATES = {
    "shape": 0.9,
    "colour": 0.9,
    "background": 0.6,
    "size": 0.5,
    "position": 0.5,
    "saturation": 0.4,
    "pattern": 0.4,
    "focus": 0.4,
    "lighting": 0.4,
}


def training_caption(scene: Scene, rng: random.Random, empty_rate: float = 0.1) -> str:
    """A random partial caption (empty with ``empty_rate``, for classifier-free guidance)."""
    if rng.random() < empty_rate:
        return ""
    return caption(scene, {a for a, p in CAPTION_RATES.items() if rng.random() < p})


def vocabulary() -> list[str]:
    """Every word the grammar can produce, in a fixed order."""
    words = ["a", "at", "the", "on", "background", "shape", ","]
    for values in ATTRIBUTES.values():
        for value in values:
            for word in value.split():
                if word not in words:
                    words.append(word)
    return words


# ----------------------------------------------------------------------------- prompt sets


def prompt_split(seed: int = 0, held_out: int = 30) -> tuple[list[str], list[str]]:
    """(train, held-out) user prompts "a {colour} {shape} on a {background} background".

    The 120 combinations are shuffled with ``seed``; the held-out ones are never RL training
    prompts. Training prompts also include the 24 background-free forms ("a red circle").
    """
    combos = [(c, s, b) for s in SHAPES for c in COLOURS for b in BACKGROUNDS]
    random.Random(seed).shuffle(combos)
    text = lambda c, s, b: f"a {c} {s} on a {b} background"
    held = [text(*combo) for combo in combos[:held_out]]
    train = [f"a {c} {s}" for s in SHAPES for c in COLOURS] + [text(*combo) for combo in combos[held_out:]]
    return train, held


def parse_prompt(prompt: str) -> dict[str, str]:
    """Attributes a prompt names, read back with the grammar's vocabulary (for evaluation)."""
    found: dict[str, str] = {}
    text = f" {prompt.lower()} "
    background = next((b for b in BACKGROUNDS if f" {b} background" in text), None)
    if background:
        found["background"] = background
        text = text.replace(f" {background} background", " ")
    for name, values in ATTRIBUTES.items():
        if name == "background":
            continue
        for value in sorted(values, key=len, reverse=True):
            if f" {value} " in text or f" {value}," in text:
                found[name] = value
                break
    return found


def unsupported_words(prompt: str) -> list[str]:
    """Words and phrases of ``prompt`` the mini world cannot draw, for a one-line warning.

    Words outside the grammar's vocabulary ("dog"), and "<word> background" where the word is not
    one of the world's backgrounds ("blue background": the world has "dark blue" but no blue
    background), in the order they appear.
    """
    text = prompt.lower().replace(",", " , ")
    for background in BACKGROUNDS:
        text = text.replace(f"{background} background", " ")
    words, known, found = text.split(), set(vocabulary()), []
    for i, word in enumerate(words):
        if i + 1 < len(words) and words[i + 1] == "background" and word not in ("a", "the", ","):
            found.append(f"{word} background")
        elif word not in known:
            found.append(word)
    return list(dict.fromkeys(found))


def scene_dict(scene: Scene) -> dict[str, str]:
    return asdict(scene)


assert [f.name for f in fields(Scene)] == list(ATTRIBUTES)  # random_scene and labels() build scenes from ATTRIBUTES
