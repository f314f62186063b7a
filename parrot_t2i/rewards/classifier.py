"""Image sentiment from any hub image classifier: the probability mass of its positive labels.

The paper's sentiment model (Serra et al. 2023, a Keras ViT on T4SA 2.0) has no transformers port
and no stated licence, so ``clip_sentiment`` (zero-shot) is the default stand-in; this reward lets
users plug in a trained classifier instead, e.g. a 3-way negative/neutral/positive ViT.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..errors import ParrotError, missing_weights_error
from .base import register_reward
from .clip import DTYPES, Preprocess, check_dtype, clip_preprocess, image_processor


@functools.lru_cache(maxsize=4)
def _load(source: str, dtype: str, device: str):
    from transformers import AutoModelForImageClassification

    try:
        model = (
            AutoModelForImageClassification.from_pretrained(source, torch_dtype=DTYPES[dtype], use_safetensors=True)
            .to(device)
            .eval()
            .requires_grad_(False)
        )
        preprocess = Preprocess.from_processor(image_processor(source))
    except OSError as err:
        raise missing_weights_error(source, err) from None
    return model, preprocess


@register_reward("classifier_sentiment")
class ClassifierSentiment:
    """Image sentiment: a hub image classifier's total probability of its positive label(s)."""

    name = "classifier_sentiment"

    def __init__(self, model: str | None = None, positive_labels: list[str] | None = None, dtype: str = "float32"):
        if not model:
            raise ParrotError(
                "reward 'classifier_sentiment' needs model=ID_OR_FOLDER (an image classification model); for zero-shot sentiment use 'clip_sentiment'"
            )
        check_dtype(self.name, dtype)
        self.source, self.dtype, self.positive_labels = model, dtype, positive_labels

    def positive_indices(self, id2label: dict[int, str]) -> list[int]:
        """Label ids named in ``positive_labels`` (case-insensitive), or by default every label containing "positive"."""
        wanted = [label.lower() for label in self.positive_labels] if self.positive_labels else None
        chosen = [
            int(i)
            for i, label in id2label.items()
            if (label.lower() in wanted if wanted else "positive" in label.lower())
        ]
        if not chosen:
            raise ParrotError(
                f"reward 'classifier_sentiment': no positive label among the model's labels {sorted(id2label.values())}; set positive_labels"
            )
        return chosen

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        model, preprocess = _load(self.source, self.dtype, str(images.device))
        logits = model(pixel_values=clip_preprocess(images, preprocess).to(model.dtype)).logits.float()
        return logits.softmax(-1)[:, self.positive_indices(model.config.id2label)].sum(-1)
