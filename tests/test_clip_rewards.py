"""CLIP-family rewards on tiny random models saved and loaded through the real from_pretrained path."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import build_tiny_clip

from parrot_t2i.errors import ParrotError
from parrot_t2i.rewards import build_reward, build_rewards
from parrot_t2i.rewards.clip import (
    Preprocess,
    ScoreHead,
    clip_preprocess,
    load_clip,
)

CLIP_DEFAULT = Preprocess(224, 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
PROMPTS = ["a red circle", "a photo of a cat", "a city at night"]


def test_preprocessing_by_hand_on_fixed_images():
    # A constant image stays constant: every pixel is (0.5 − mean) / std, whatever the resize.
    out = clip_preprocess(torch.full((1, 3, 30, 50), 0.5), CLIP_DEFAULT)
    assert out.shape == (1, 3, 224, 224)
    expected = [(0.5 - m) / s for m, s in zip(CLIP_DEFAULT.mean, CLIP_DEFAULT.std)]
    torch.testing.assert_close(out[0, :, 100, 100], torch.tensor(expected), atol=1e-5, rtol=0)
    # Geometry: a 40×80 image (H×W) becomes 224×448 and the centre crop keeps columns 112..335, i.e.
    # source columns 20..60: the black left quarter and the white right quarter fall just outside.
    image = torch.full((1, 3, 40, 80), 0.5)
    image[..., :20], image[..., 60:] = 0.0, 1.0
    out = clip_preprocess(image, CLIP_DEFAULT)
    grey = clip_preprocess(torch.full((1, 3, 40, 80), 0.5), CLIP_DEFAULT)
    torch.testing.assert_close(out[..., 12:212], grey[..., 12:212], atol=1e-4, rtol=0)  # the middle is untouched
    assert (out[..., 0] < grey[..., 0] - 0.1).all() and (
        out[..., 223] > grey[..., 223] + 0.1
    ).all()  # bicubic bleed at both edges


def test_preprocessing_matches_the_transformers_processor():
    from transformers import CLIPImageProcessorPil

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 37, 61, generator=generator)  # odd sizes exercise int() truncation and crop offsets
    reference = CLIPImageProcessorPil()(
        images=[img.permute(1, 2, 0).numpy() for img in images], return_tensors="pt", do_rescale=False
    ).pixel_values
    ours = clip_preprocess(images, CLIP_DEFAULT)
    assert ours.shape == reference.shape
    # PIL rounds to uint8 after resizing: agreement within ~1/255 in pixel units.
    assert ((ours - reference) * torch.tensor(CLIP_DEFAULT.std).view(1, 3, 1, 1)).abs().mean() < 1 / 255


def test_clip_score_equals_the_models_own_forward(tiny_clip):
    from transformers import CLIPModel

    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    clip = load_clip(tiny_clip, None, "float32", "cpu")
    model, tokenizer, preprocess = clip.model, clip.tokenizer, clip.preprocess
    assert isinstance(model, CLIPModel) and preprocess.size == preprocess.crop == 32
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**tokens, pixel_values=clip_preprocess(images, preprocess))
    cosine = (out.image_embeds * out.text_embeds).sum(-1)
    clip_score = build_reward({"name": "clip_score", "args": {"model": tiny_clip}})
    torch.testing.assert_close(clip_score(images, PROMPTS), cosine, atol=1e-5, rtol=0)


def test_rewards_built_together_share_one_model_and_nothing_is_cached_process_wide(tiny_clip, tmp_path):
    head = tmp_path / "head.safetensors"
    from safetensors.torch import save_file

    save_file(ScoreHead(16).state_dict(), str(head))
    specs = [
        {"name": "clip_sentiment", "args": {"model": tiny_clip}},
        {"name": "laion_aesthetic", "args": {"model": tiny_clip, "head": str(head)}},
        {"name": "clip_score", "args": {"model": tiny_clip, "dtype": "bfloat16"}},  # another dtype: another copy
    ]
    sentiment, aesthetic, half = build_rewards(specs)
    assert sentiment.clip is aesthetic.clip and half.clip.model is not sentiment.clip.model
    again = build_rewards(specs[:1])[0]
    assert again.clip.model is not sentiment.clip.model  # a new build loads anew: the caller owns the cache
    cache: dict = {}
    first, second = (build_reward(specs[0], "cpu", cache) for _ in range(2))
    assert first.clip is second.clip and len(cache) == 1


def test_pickscore_on_an_h_shaped_clip_with_a_separate_processor(tiny_clip, tmp_path):
    """PickScore is a LAION ViT-H-shaped CLIP (GELU) whose tokenizer and processor come from another repo."""
    h_shaped = str(build_tiny_clip(tmp_path / "pick", seed=7, hidden_act="gelu"))
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "vocab.json", "merges.txt"):
        (tmp_path / "pick" / name).unlink(missing_ok=True)  # the model folder holds weights only, like PickScore_v1
    images = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    clip = load_clip(h_shaped, tiny_clip, "float32", "cpu")
    model, tokenizer, preprocess = clip.model, clip.tokenizer, clip.preprocess
    assert model.config.vision_config.hidden_act == "gelu"
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**tokens, pixel_values=clip_preprocess(images, preprocess))
    pickscore = build_reward({"name": "pickscore", "args": {"model": h_shaped, "processor": tiny_clip}})
    torch.testing.assert_close(pickscore(images, PROMPTS), out.logits_per_image.diagonal(), atol=1e-4, rtol=0)


def test_clip_sentiment_is_a_two_way_softmax_over_label_ensembles(tiny_clip):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reward = build_reward(
        {"name": "clip_sentiment", "args": {"model": tiny_clip, "positive": ["happy", "joyful"], "negative": ["sad"]}}
    )
    p = reward(images, [""] * 4)
    image = reward.image_embeds(images)
    positive = F.normalize(reward.text_embeds(["happy", "joyful"]).mean(0), dim=-1)
    negative = reward.text_embeds(["sad"])[0]
    scale = reward.clip.model.logit_scale.exp()
    expected = torch.sigmoid(scale * (image @ positive - image @ negative))
    torch.testing.assert_close(p, expected, atol=1e-5, rtol=0)
    with pytest.raises(ParrotError, match="at least one positive and one negative"):
        build_reward({"name": "clip_sentiment", "args": {"model": tiny_clip, "negative": []}})


def test_laion_aesthetic_head_converts_from_pth_and_scores(tiny_clip, tmp_path, monkeypatch):
    import sys

    assert sum(p.numel() for p in ScoreHead(768).parameters()) == 927_969  # the upstream head
    torch.manual_seed(3)
    pth, out = tmp_path / "head.pth", tmp_path / "head.safetensors"
    head = ScoreHead(16)  # the tiny CLIP projects to 16 dims
    torch.save(head.state_dict(), pth)
    monkeypatch.setattr(sys, "argv", ["convert", str(pth), str(out)])
    from importlib import import_module

    sys.path.insert(0, "scripts")
    try:
        import_module("convert_laion_aesthetic").main()
    finally:
        sys.path.remove("scripts")
    reward = build_reward({"name": "laion_aesthetic", "args": {"head": str(out), "model": tiny_clip}})
    images = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = head.eval()(reward.image_embeds(images))
    torch.testing.assert_close(reward(images, PROMPTS), expected, atol=1e-5, rtol=0)
    with pytest.raises(ParrotError, match="needs its head weights.*convert_laion_aesthetic.py"):
        build_reward("laion_aesthetic")


def test_bfloat16_scores_close_to_float32(tiny_clip):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    full = build_reward({"name": "clip_score", "args": {"model": tiny_clip}})(images, PROMPTS)
    half = build_reward({"name": "clip_score", "args": {"model": tiny_clip, "dtype": "bfloat16"}})(images, PROMPTS)
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.05
    with pytest.raises(ParrotError, match="dtype must be one of"):
        build_reward({"name": "clip_score", "args": {"model": tiny_clip, "dtype": "half"}})


def test_missing_weights_offline_is_one_clear_paragraph_when_the_reward_is_built(tmp_path):
    with pytest.raises(ParrotError, match="could not load model 'openai/clip-vit-base-patch32'.*HF_HUB_OFFLINE"):
        build_reward({"name": "clip_score", "args": {"model": "openai/clip-vit-base-patch32"}})


def to_openclip_layout(model) -> dict:
    """A CLIPModel's weights as OpenCLIP saves them (fused in_proj, projection matrices P = W.T)."""
    out = {
        "logit_scale": model.logit_scale.data,
        "text_projection": model.text_projection.weight.T,
        "visual.proj": model.visual_projection.weight.T,
    }
    text, vision = model.text_model, model.vision_model
    out.update(
        {
            "token_embedding.weight": text.embeddings.token_embedding.weight,
            "positional_embedding": text.embeddings.position_embedding.weight,
            "ln_final.weight": text.final_layer_norm.weight,
            "ln_final.bias": text.final_layer_norm.bias,
            "visual.conv1.weight": vision.embeddings.patch_embedding.weight,
            "visual.class_embedding": vision.embeddings.class_embedding,
            "visual.positional_embedding": vision.embeddings.position_embedding.weight,
            "visual.ln_pre.weight": vision.pre_layrnorm.weight,
            "visual.ln_pre.bias": vision.pre_layrnorm.bias,
            "visual.ln_post.weight": vision.post_layernorm.weight,
            "visual.ln_post.bias": vision.post_layernorm.bias,
            "attn_mask": torch.zeros(77, 77),  # a buffer some OpenCLIP versions save
        }
    )
    for prefix, layers in (("", text.encoder.layers), ("visual.", vision.encoder.layers)):
        for i, layer in enumerate(layers):
            block, attn = f"{prefix}transformer.resblocks.{i}", layer.self_attn
            out[f"{block}.attn.in_proj_weight"] = torch.cat(
                [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
            )
            out[f"{block}.attn.in_proj_bias"] = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            for ours, theirs in [
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ]:
                module = layer.get_submodule(ours)
                out[f"{block}.{theirs}.weight"], out[f"{block}.{theirs}.bias"] = module.weight, module.bias
    return {k: v.detach().clone() for k, v in out.items()}


def test_hpsv2_checkpoint_converts_from_openclip_layout_and_scores_as_the_original(tiny_clip, tmp_path, monkeypatch):
    import sys
    from importlib import import_module

    from parrot_t2i.rewards.openclip import openclip_to_transformers

    model = load_clip(tiny_clip, None, "float32", "cpu").model
    checkpoint = tmp_path / "HPS_v2_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in to_openclip_layout(model).items()}}, checkpoint)
    sys.path.insert(0, "scripts")
    try:
        out = import_module("convert_hpsv2").convert(str(checkpoint), tiny_clip, tmp_path / "hps")
    finally:
        sys.path.remove("scripts")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    hps = build_reward({"name": "hpsv2", "args": {"model": str(out)}})(images, PROMPTS)
    original = build_reward({"name": "clip_score", "args": {"model": tiny_clip}})(images, PROMPTS)
    torch.testing.assert_close(hps, original, atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="unexpected OpenCLIP key 'visual.head.weight'"):
        openclip_to_transformers({"visual.head.weight": torch.zeros(1)})
    with pytest.raises(ParrotError, match="convert_hpsv2.py"):
        build_reward("hpsv2")
