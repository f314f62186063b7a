import pytest
import torch
from diffusers import StableDiffusionPipeline

from parrot_t2i.builtin import resolve
from parrot_t2i.diffusion import CFG
from parrot_t2i.errors import ParrotError
from parrot_t2i.policies import Policy
from parrot_t2i.policies.unet import T2IPolicy


def test_loads_pixel_and_vae_models_through_from_pretrained(tiny_pixel_model, tiny_sd_model):
    pixel = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    assert isinstance(pixel, Policy)  # the interface the trainer, evaluation and generation use
    assert pixel.vae is None and pixel.resolution == 16 and pixel.latent_shape() == (3, 16, 16)
    sd = T2IPolicy.from_pretrained(str(tiny_sd_model))
    assert sd.vae is not None and sd.vae_scale_factor == 2 and sd.resolution == 16 and sd.latent_shape() == (4, 8, 8)
    assert not any(p.requires_grad for p in sd.unet.parameters())


def test_builtin_tiny_is_built_once_and_loaded_from_its_folder():
    first = resolve("builtin:tiny", "t2i")
    assert resolve("builtin:tiny", "t2i") == first and resolve("org/model", "t2i") == "org/model"
    policy = T2IPolicy.from_pretrained("builtin:tiny")
    assert policy.resolution == 16
    with pytest.raises(
        ParrotError,
        match="unknown built-in model 'builtin:nope' \\(built-ins: builtin:mini, builtin:mini-flow, builtin:tiny\\)",
    ):
        resolve("builtin:nope", "t2i")
    with pytest.raises(ParrotError, match="unknown built-in PEN 'builtin:tiny' \\(built-ins: builtin:mini\\)"):
        resolve("builtin:tiny", "pen")


def test_missing_weights_give_one_paragraph(tmp_path):
    with pytest.raises(ParrotError) as info:
        T2IPolicy.from_pretrained(str(tmp_path / "not-there"))
    message = str(info.value)
    assert "not-there" in message and "HF_HUB_OFFLINE" in message and "\n" not in message


def test_cross_attention_set_is_exactly_attn2(tiny_pixel_model):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    params = policy.set_trainable("cross_attention")
    names = {n for n, p in policy.unet.named_parameters() if p.requires_grad}
    assert names and all(".attn2." in n for n in names)
    assert len(params) == len(names)
    assert {n for n, _ in policy.unet.named_parameters() if ".attn2." in n} == names


def test_full_set_trains_whole_unet_and_never_the_text_encoder(tiny_pixel_model):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    params = policy.set_trainable("full")
    assert len(params) == len(list(policy.unet.parameters()))
    assert not any(p.requires_grad for p in policy.text_encoder.parameters())


def test_trainable_weights_round_trip(tiny_pixel_model, tmp_path):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    params = policy.set_trainable("cross_attention")
    with torch.no_grad():
        params[0].add_(1.0)
    policy.save_trainable(tmp_path, "cross_attention")
    fresh = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    fresh.load_trainable(tmp_path)
    for (name, a), (_, b) in zip(policy.unet.named_parameters(), fresh.unet.named_parameters()):
        assert torch.equal(a, b), name


def test_lora_adapters_train_only_lora_and_load_in_plain_diffusers(tiny_sd_model, tmp_path):
    policy = T2IPolicy.from_pretrained(str(tiny_sd_model))
    params = policy.set_trainable("lora", lora_rank=2)
    names = [n for n, p in policy.unet.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names) and len(params) == len(names)
    with torch.no_grad():
        for p in params:
            p.add_(0.05)
    policy.save_trainable(tmp_path, "lora")
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_model), safety_checker=None)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    text = policy.encode(["a cat"]).embeds
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=text).sample
        pipe.load_lora_weights(str(tmp_path))
        after = pipe.unet(x, t, encoder_hidden_states=text).sample
        ours = policy.unet(x, t, encoder_hidden_states=text).sample
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ours, atol=1e-5, rtol=1e-4)


def test_long_prompts_are_truncated_with_a_warning(tiny_pixel_model, caplog):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    with caplog.at_level("WARNING"):
        cond = policy.encode(["x " * 200, "short"])
    assert cond.embeds.shape[:2] == (2, 77)
    assert "1 prompt(s) exceed" in caplog.text


def test_sdxl_encoding_matches_the_diffusers_pipeline(tiny_sdxl_model):
    from diffusers import StableDiffusionXLPipeline

    policy = T2IPolicy.from_pretrained(str(tiny_sdxl_model))
    assert policy.is_sdxl and policy.zero_negative and policy.resolution == 16
    prompts = ["a red circle", "a cat"]
    cond = policy.encode(prompts)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    torch.testing.assert_close(cond.embeds, embeds)
    torch.testing.assert_close(cond.added["text_embeds"], pooled)
    assert cond.added["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * 2  # original size, crop (0, 0), target size
    uncond = policy.encode_negative()
    assert uncond.embeds.abs().sum() == 0 == uncond.added["text_embeds"].abs().sum()
    assert negative.abs().sum() == 0 == negative_pooled.abs().sum()  # the pipeline zeroes both as well


def test_sdxl_sampler_reproduces_the_pipeline_and_lora_loads_in_diffusers(tiny_sdxl_model, tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    from parrot_t2i.evaluate import generate

    policy = T2IPolicy.from_pretrained(str(tiny_sdxl_model))
    ours = generate(policy, ["a red circle"], CFG(4.0), seed=3, num_inference_steps=3)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = pipe(
        ["a red circle"],
        num_inference_steps=3,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
        height=16,
        width=16,
    ).images
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    policy.set_trainable("lora", 2)
    with torch.no_grad():
        for name, param in policy.unet.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
    policy.save_trainable(tmp_path / "lora", "lora")
    pipe.load_lora_weights(tmp_path / "lora")
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_pickled_unet_weights_are_refused(tmp_path):
    """A diffusers folder whose UNet ships only diffusion_pytorch_model.bin is refused, not unpickled."""
    import shutil

    from diffusers import UNet2DConditionModel

    from parrot_t2i.tiny import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "sd", sample_size=8)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    with pytest.raises(ParrotError, match="only from safetensors"):
        T2IPolicy.from_pretrained(str(folder))
