"""Each real-model preset's code path, one training iteration at low resolution on tiny models.

The presets name hub models; here every model is swapped for a tiny random one of the same classes
(SD pipeline with a VAE, GPT-2 PEN, CLIP reward backbones, aesthetic head), saved and loaded back
through from_pretrained. Everything else (trainable set, LoRA, precision, checkpointing, slicing,
objective, identifiers, Eq. 5 evaluation) is the preset's own.
"""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import build_tiny_pen

from parrot_t2i.config import load_config
from parrot_t2i.policies.unet import T2IPolicy
from parrot_t2i.rewards.clip import ScoreHead
from parrot_t2i.run import setup_run
from parrot_t2i.runs import open_run, run_expander, run_policy
from parrot_t2i.trainer import train


@pytest.fixture(scope="module")
def tiny_real_models(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("tiny-real")
    head = root / "head.safetensors"
    save_file(ScoreHead(16).state_dict(), str(head))
    return {"clip": tiny_clip, "pen": str(build_tiny_pen(root / "pen")), "head": str(head)}


def preset_on_tiny_models(preset, tiny_model, models, tmp_path, *extra):
    rewards = (
        f"[{{name: laion_aesthetic, args: {{head: '{models['head']}', model: '{models['clip']}'}}}},"
        f" {{name: pickscore, args: {{model: '{models['clip']}', processor: '{models['clip']}'}}}},"
        f" {{name: clip_score, args: {{model: '{models['clip']}'}}}},"
        f" {{name: clip_sentiment, args: {{model: '{models['clip']}'}}}}]"
    )
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red circle\na blue square\n")
    return load_config(
        preset,
        [
            f"model.pretrained={tiny_model}",
            f"pen.pretrained={models['pen']}",
            "pen.max_new_tokens=8",
            f"rewards={rewards}",
            "prompts.prompts=['a cat', 'a dog']",
            "sample.num_inference_steps=2",
            "sample.prompts_per_iteration=2",
            "sample.images_per_prompt=4",
            "train.num_iterations=1",
            "train.max_grad_norm=1.0",  # the paper's 1e-4 would leave tiny weights visibly unchanged
            f"eval.file={prompts}",
            "eval.images_per_prompt=1",
            f"train.output_dir={tmp_path / 'run'}",
            *extra,
        ],
    )


@pytest.mark.parametrize(
    ("preset", "model"),
    [("sd15-paper", "tiny_sd_model"), ("sd15-lora-24gb", "tiny_sd_model"), ("sdxl-lora", "tiny_sdxl_model")],
)
def test_preset_code_path_trains_one_iteration_on_tiny_models(preset, model, request, tiny_real_models, tmp_path):
    tiny_model = request.getfixturevalue(model)
    config = preset_on_tiny_models(preset, tiny_model, tiny_real_models, tmp_path)
    faithful = load_config(preset)
    assert (config.model.trainable, config.train.mixed_precision, config.objective.reward_normalization) == (
        faithful.model.trainable,
        faithful.train.mixed_precision,
        "none",
    )
    run = setup_run(config, tmp_path / "probe")
    assert (
        run.policy.vae is not None
        and run.policy.vae.use_slicing
        and run.policy.unet.is_gradient_checkpointing == config.model.gradient_checkpointing
    )
    run_dir = train(config)
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    for name in ("laion_aesthetic", "pickscore", "clip_score", "clip_sentiment"):
        assert torch.isfinite(torch.tensor(metrics[f"reward/{name}/mean"]))
    assert metrics["grad_norm"] > 0 and metrics["pen/grad_norm"] > 0  # both networks got a gradient and a step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_images"] == 2 and set(summary["after"]) == {
        "laion_aesthetic",
        "pickscore",
        "clip_score",
        "clip_sentiment",
        "average",
        "hv_per_prompt",
    }
    saved, checkpoint = open_run(run_dir)
    trained, base = run_policy(saved, checkpoint), T2IPolicy.from_pretrained(str(tiny_model))
    base_params = dict(base.unet.named_parameters())
    if config.model.trainable == "lora":
        assert any("lora" in n for n, _ in trained.unet.named_parameters())
    else:  # the checkpoint's trained weights were loaded, not the base model's
        assert any(not torch.equal(p, base_params[n]) for n, p in trained.unet.named_parameters())
    assert any("lora" in n for n, _ in run_expander(saved, checkpoint).model.named_parameters())
    if config.model.trainable == "lora":  # plain diffusers can load the LoRA
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(tiny_model)
        pipe.load_lora_weights(checkpoint)
        assert any("lora" in n for n, _ in pipe.unet.named_parameters())


@pytest.mark.parametrize(("preset", "kind"), [("sd35-medium-lora", "sd3"), ("flux-dev-lora", "flux")])
def test_flow_presets_train_one_iteration_on_tiny_models(preset, kind, tiny_real_models, tmp_path):
    """SD3.5 and FLUX.1-dev presets on tiny models of the same classes: bf16 weights, float32 LoRA,
    a longer chain at inference than in training, and a LoRA their own pipelines load."""
    from tiny_models import build_tiny_flux, build_tiny_sd3

    model = (build_tiny_sd3 if kind == "sd3" else build_tiny_flux)(tmp_path / kind)
    faithful = load_config(preset)
    assert (faithful.model.dtype, faithful.model.trainable, faithful.model.resolution) == ("bfloat16", "lora", 512)
    assert faithful.eval.num_inference_steps > faithful.sample.num_inference_steps  # Flow-GRPO's 10 / 40, 6 / 28
    config = preset_on_tiny_models(
        preset, model, tiny_real_models, tmp_path, "model.resolution=32", "eval.num_inference_steps=3"
    )
    run_dir = train(config)
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    for name in ("laion_aesthetic", "pickscore", "clip_score", "clip_sentiment"):
        assert torch.isfinite(torch.tensor(metrics[f"reward/{name}/mean"]))
    assert metrics["grad_norm"] > 0 and metrics["pen/grad_norm"] > 0
    trained = run_policy(*open_run(run_dir))
    lora = [p for n, p in trained.transformer.named_parameters() if "lora" in n]
    assert trained.transformer.dtype == torch.bfloat16 and lora and all(p.dtype == torch.float32 for p in lora)
    without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if kind == "sd3" else {}
    pipe = trained.pipeline_class.from_pretrained(model, dtype=torch.bfloat16, **without_t5)
    pipe.load_lora_weights(open_run(run_dir)[1])
    assert any("lora" in n for n, _ in pipe.transformer.named_parameters())


def test_presets_without_their_weights_fail_with_one_clear_line(capsys, tmp_path):
    from parrot_t2i.cli import main

    argv = [
        "train",
        "--config",
        "sd15-paper",
        "--output-dir",
        str(tmp_path / "run"),
        "--set",
        "prompts.prompts=['a cat']",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "reward 'laion_aesthetic' needs its head weights" in err
        and "convert_laion_aesthetic.py" in err
    )
    assert main([*argv, "--set", "rewards=[clip_score]"]) == 2  # rewards load first, before any model
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not load model 'openai/clip-vit-base-patch32'" in err
    assert main([*argv, "--set", "rewards=[brightness]"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "could not load model 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in err
        and "HF_HOME" in err
    )
