"""The mini world's small vision and text networks: the attribute checker, the alignment dual
encoder and the preference model.

Each is a plain ``nn.Module`` with huggingface_hub's ``PyTorchModelHubMixin``, so it is saved as
``config.json`` + ``model.safetensors`` and loaded with ``from_pretrained`` like any hub model. The
folders also hold the mini tokenizer where the model reads text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from ..builtin import MINI_WORLD_MARKER
from .world import ATTRIBUTES, RESOLUTION, parse_prompt


def write_model_card(folder: str | Path, title: str, description: str, command: str) -> None:
    """Replace huggingface_hub's generic README with what this model is and how it was made, and mark
    the folder as the mini world's, so a retrained model loaded by path keeps the world's PEN,
    vocabulary warning and attribute checker (``builtin.is_mini_world_model``)."""
    text = (
        f"# {title}\n\n{description}\n\n"
        f"Part of parrot-t2i's embedded mini world (docs/MINI_WORLD.md). Rebuilt by:\n\n    {command}\n"
    )
    (Path(folder) / "README.md").write_text(text)
    (Path(folder) / MINI_WORLD_MARKER).write_text(json.dumps({"rebuilt_by": command}) + "\n")


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class ConvEncoder(nn.Module):
    """(B, 3, 32, 32) in [0, 1] → (B, out_dim). The final 4×4 map is flattened, not pooled, so
    where things are in the image (the position attribute) stays readable."""

    def __init__(self, width: int = 32, out_dim: int = 256):
        super().__init__()
        w = width
        self.convs = nn.Sequential(
            _block(3, w, 1),
            _block(w, w, 1),  # 32×32
            _block(w, 2 * w, 2),
            _block(2 * w, 2 * w, 1),  # 16×16
            _block(2 * w, 4 * w, 2),  # 8×8
            _block(4 * w, 4 * w, 2),  # 4×4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * (RESOLUTION // 8) ** 2, out_dim), nn.SiLU())

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.convs(images * 2 - 1))


class AttributeChecker(nn.Module, PyTorchModelHubMixin):
    """Reads every scene attribute from an image: one classification head per attribute.

    Used only to evaluate prompt following, never as a reward, so RL cannot learn to fool it.
    """

    def __init__(self, width: int = 32, hidden: int = 256):
        super().__init__()
        self.encoder = ConvEncoder(width, hidden)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.encoder(images)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, list[str]]:
        """The attribute values read from each image, as words."""
        logits = self(images.to(next(self.parameters()).device, torch.float32))
        return {name: [ATTRIBUTES[name][i] for i in out.argmax(1).tolist()] for name, out in logits.items()}

    def prompt_hits(self, images: Tensor, prompts: list[str], attributes: tuple[str, ...]) -> dict[str, list[bool]]:
        """Per attribute, whether each image shows what its prompt names (False where the prompt
        names none): the prompt-following judge of the benchmarks."""
        predicted = self.predict(images)
        named = [parse_prompt(p) for p in prompts]
        return {a: [value == wanted.get(a) for value, wanted in zip(predicted[a], named)] for a in attributes}


class TextEncoder(nn.Module):
    """A small transformer over mini-tokenizer ids; the embedding is taken at the end-of-text token."""

    def __init__(self, vocab_size: int, max_length: int, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.zeros(max_length, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.tokens(ids) + self.positions[: ids.shape[1]]
        x = self.norm(self.transformer(x, src_key_padding_mask=~mask.bool()))
        last = mask.long().sum(1) - 1  # the end-of-text token
        return x[torch.arange(len(ids)), last]


class AlignmentModel(nn.Module, PyTorchModelHubMixin):
    """A CLIP-style dual encoder trained contrastively on procedural images and their captions.

    ``similarity`` is the cosine of the normalised embeddings, like the CLIP score the paper uses.
    """

    def __init__(self, vocab_size: int, max_length: int, embed_dim: int = 128, width: int = 32, text_width: int = 64):
        super().__init__()
        self.image_encoder = ConvEncoder(width, 256)
        self.image_projection = nn.Linear(256, embed_dim)
        self.text_encoder = TextEncoder(vocab_size, max_length, text_width)
        self.text_projection = nn.Linear(text_width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), as CLIP

    def embed_images(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def embed_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        return F.normalize(self.text_projection(self.text_encoder(ids, mask)), dim=-1)


class PreferenceModel(nn.Module, PyTorchModelHubMixin):
    """A Bradley–Terry scorer s(x): P(a preferred over b) = σ(s(a) − s(b)).

    ``reference`` is the mean score of random procedural images, set after training, so that
    σ(s(x) − reference) reads as "the probability a rater prefers x over a typical image".
    """

    def __init__(self, width: int = 32, hidden: int = 256):
        super().__init__()
        self.encoder = ConvEncoder(width, hidden)
        self.score = nn.Linear(hidden, 1)
        self.register_buffer("reference", torch.zeros(()))

    def forward(self, images: Tensor) -> Tensor:
        return self.score(self.encoder(images)).squeeze(-1)
