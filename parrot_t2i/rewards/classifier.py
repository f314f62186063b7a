"""Image sentiment from any hub image classifier: the probability mass of its positive labels.

The paper's sentiment model (Serra et al. 2023, a Keras ViT on T4SA 2.0) has no transformers port
and no stated licence, so ``clip_sentiment`` (zero-shot) is the default stand-in; this reward lets
users plug in a trained classifier instead, e.g. a 3-way negative/neutral/positive ViT.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ParrotError, missing_weights_error
from .base import load_once, register_reward
from .clip import Preprocess, check_dtype, clip_preprocess, image_processor, load_frozen


def _load(source: str, dtype: str, device: str | torch.device):
    from transformers import AutoModelForImageClassification

    try:
        model = load_frozen(AutoModelForImageClassification, source, dtype, device)
        preprocess = Preprocess.from_processor(image_processor(source))
    except OSError as err:
        raise missing_weights_error(source, err) from None
    return model, preprocess


def positive_indices(id2label: dict[int, str], positive_labels: list[str] | None) -> list[int]:
    """Label ids named in ``positive_labels`` (case-insensitive), or by default every label containing "positive"."""
    wanted = [label.lower() for label in positive_labels] if positive_labels else None
    chosen = [
        int(i) for i, label in id2label.items() if (label.lower() in wanted if wanted else "positive" in label.lower())
    ]
    if not chosen:
        raise ParrotError(
            f"reward 'classifier_sentiment': no positive label among the model's labels {sorted(id2label.values())}; "
            "set positive_labels"
        )
    return chosen


@register_reward("classifier_sentiment")
class ClassifierSentiment:
    """Image sentiment: a hub image classifier's total probability of its positive label(s)."""

    name = "classifier_sentiment"

    def __init__(self, model, preprocess: Preprocess, positive: list[int]):
        self.model, self.preprocess, self.positive = model, preprocess, positive

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        positive_labels: list[str] | None = None,
        dtype: str = "float32",
        *,
        device="cpu",
        cache=None,
    ):
        if not model:
            raise ParrotError(
                "reward 'classifier_sentiment' needs model=ID_OR_FOLDER (an image classification model); for "
                "zero-shot sentiment use 'clip_sentiment'"
            )
        check_dtype(cls.name, dtype)
        net, preprocess = load_once(
            cache, ("classifier", model, dtype, str(device)), lambda: _load(model, dtype, device)
        )
        return cls(net, preprocess, positive_indices(net.config.id2label, positive_labels))

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        pixels = clip_preprocess(images.to(self.model.device), self.preprocess).to(self.model.dtype)
        logits = self.model(pixel_values=pixels).logits.float()
        return logits.softmax(-1)[:, self.positive].sum(-1)
