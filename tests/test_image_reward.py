"""ImageReward on transformers' BLIP: checkpoint conversion and scoring on a tiny random BLIP."""

import pytest
import torch
from tiny_models import build_tiny_blip

from parrot_t2i.errors import ParrotError
from parrot_t2i.rewards import build_reward
from parrot_t2i.rewards.blip import MEAN, STD, blip_to_transformers, save_image_reward


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


def to_original_layout(model, head) -> dict:
    """The tiny model's weights under the names ImageReward.pt uses (BLIP's timm ViT, med BERT, mlp)."""
    vision = {
        "vision_model.embeddings.class_embedding": "cls_token",
        "vision_model.embeddings.position_embedding": "pos_embed",
        "vision_model.embeddings.patch_embedding.weight": "patch_embed.proj.weight",
        "vision_model.embeddings.patch_embedding.bias": "patch_embed.proj.bias",
        "vision_model.post_layernorm.weight": "norm.weight",
        "vision_model.post_layernorm.bias": "norm.bias",
    }
    block = {
        "layer_norm1": "norm1",
        "layer_norm2": "norm2",
        "self_attn.qkv": "attn.qkv",
        "self_attn.projection": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out = {}
    for key, value in model.state_dict().items():
        if key in vision:
            out[f"blip.visual_encoder.{vision[key]}"] = value
        elif key.startswith("vision_model.encoder.layers."):
            index, rest = key.removeprefix("vision_model.encoder.layers.").split(".", 1)
            module, leaf = rest.rsplit(".", 1)
            out[f"blip.visual_encoder.blocks.{index}.{block[module]}.{leaf}"] = value
        else:
            out[f"blip.{key}"] = value
    out["blip.text_encoder.embeddings.position_ids"] = torch.arange(40)[None]
    out["blip.visual_encoder_m.cls_token"] = torch.zeros(1)  # BLIP pre-training leftovers are skipped
    out.update({f"mlp.{k}": v for k, v in head.state_dict().items()})
    return {k: v.clone() for k, v in out.items()}


def test_image_reward_converts_and_scores_as_blip_plus_head(tiny_blip, tmp_path):
    model, head, tokenizer = tiny_blip
    state = to_original_layout(model, head)
    blip, head_state, skipped = blip_to_transformers(state)
    assert blip.keys() == {k for k in model.state_dict()}  # every tower weight, renamed back exactly
    assert skipped == ["text_encoder.embeddings.position_ids", "visual_encoder_m.cls_token"] and set(head_state) == set(
        head.state_dict()
    )
    out = save_image_reward(state, model.config, tokenizer, tmp_path / "ir")
    reward = build_reward({"name": "image_reward", "args": {"model": str(out)}})

    images = torch.rand(3, 3, 40, 32, generator=torch.Generator().manual_seed(1))
    prompts = ["a red circle", "a cat on the city at night", "blue square"]
    scores = reward(images, prompts)
    # By hand: resize shortest side to 32 + centre crop + CLIP normalisation, ViT, BERT over 35
    # tokens with cross-attention to every patch, [CLS] state, head, normalisation.
    from parrot_t2i.rewards.blip import CLIP_MEAN, CLIP_STD
    from parrot_t2i.rewards.clip import Preprocess, clip_preprocess

    with torch.no_grad():
        patches = model.vision_model(
            pixel_values=clip_preprocess(images, Preprocess(32, 32, CLIP_MEAN, CLIP_STD))
        ).last_hidden_state
        tokens = tokenizer(prompts, padding="max_length", max_length=35, truncation=True, return_tensors="pt")
        assert tokens.input_ids.shape == (3, 35) and (tokens.input_ids[:, 0] == tokenizer.cls_token_id).all()
        cls = model.text_encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, encoder_hidden_states=patches
        ).last_hidden_state[:, 0]
        expected = (head(cls) - MEAN) / STD
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert scores.std() > 0


def test_image_reward_bad_input(tiny_blip, tmp_path):
    model, head, tokenizer = tiny_blip
    with pytest.raises(ParrotError, match="convert_image_reward.py"):
        build_reward("image_reward")
    state = to_original_layout(model, head)
    del state["blip.visual_encoder.norm.weight"]
    with pytest.raises(ParrotError, match="missing \\['vision_model.post_layernorm.weight'\\]"):
        save_image_reward(state, model.config, tokenizer, tmp_path / "bad")
    with pytest.raises(KeyError, match="unexpected ImageReward vision key"):
        blip_to_transformers({"blip.visual_encoder.head.weight": torch.zeros(1)})


def test_conversion_script_builds_blip_large_from_med_config():
    import sys
    from importlib import import_module

    from transformers import BlipForImageTextRetrieval

    med = {
        "vocab_size": 30524,
        "hidden_size": 768,
        "encoder_width": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
    }
    sys.path.insert(0, "scripts")
    try:
        config = import_module("convert_image_reward").blip_config(med)
    finally:
        sys.path.remove("scripts")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in BlipForImageTextRetrieval(config).state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding"] == (1, 197, 1024)  # ViT-L/16 at 224: 14² patches + CLS
    assert shapes["vision_model.encoder.layers.23.self_attn.qkv.weight"] == (3072, 1024)
    assert shapes["text_encoder.encoder.layer.11.crossattention.self.key.weight"] == (768, 1024)
    assert shapes["text_encoder.embeddings.word_embeddings.weight"] == (30524, 768)
