"""Sentiment from a hub image classifier, on a tiny random ViT saved and loaded by path."""

import pytest
import torch

from parrot_t2i.errors import ParrotError
from parrot_t2i.rewards import build_reward
from parrot_t2i.rewards.clip import Preprocess, clip_preprocess


def test_preprocessing_follows_the_vit_processor(tiny_vit):
    from transformers import ViTImageProcessorPil

    processor = ViTImageProcessorPil.from_pretrained(tiny_vit)
    p = Preprocess.from_processor(processor)
    assert p == Preprocess((32, 32), None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")  # exact resize, no crop
    images = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(1))
    reference = processor(
        images=[img.permute(1, 2, 0).numpy() for img in images], return_tensors="pt", do_rescale=False
    ).pixel_values
    assert ((clip_preprocess(images, p) - reference) * 0.5).abs().mean() < 1 / 255


def test_classifier_sentiment_is_the_positive_probability(tiny_vit):
    from transformers import ViTForImageClassification

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reward = build_reward({"name": "classifier_sentiment", "args": {"model": tiny_vit}})
    model = ViTForImageClassification.from_pretrained(tiny_vit).eval()
    with torch.no_grad():
        probs = model(pixel_values=(images - 0.5) / 0.5).logits.softmax(-1)  # 32 px already: resize is the identity
    torch.testing.assert_close(reward(images, [""] * 3), probs[:, 2], atol=1e-5, rtol=0)
    both = build_reward(
        {"name": "classifier_sentiment", "args": {"model": tiny_vit, "positive_labels": ["Positive", "neutral"]}}
    )
    torch.testing.assert_close(both(images, [""] * 3), probs[:, 1] + probs[:, 2], atol=1e-5, rtol=0)
    with pytest.raises(
        ParrotError, match="no positive label among the model's labels \\['negative', 'neutral', 'positive'\\]"
    ):  # found when the reward is built, before any image is drawn
        build_reward({"name": "classifier_sentiment", "args": {"model": tiny_vit, "positive_labels": ["joy"]}})
    with pytest.raises(ParrotError, match="needs model=ID_OR_FOLDER"):
        build_reward("classifier_sentiment")
