"""The mini world's flow-matching model (``builtin:mini-flow``): its training targets by hand, the
``parrot mini train-flow`` command, and the pixel-space flow policy on what that command writes."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from parrot_t2i.builtin import is_mini_world_model
from parrot_t2i.diffusion import CFG, guided, transition_log_prob
from parrot_t2i.mini.train_flow import flow_matching_targets
from parrot_t2i.policies import Policy, load_policy


def test_flow_matching_targets_by_hand():
    # x_σ = (1 − σ)·x₀ + σ·ε and v = ε − x₀: at σ = 0.25, x₀ = (1, −1), ε = (0.5, 2):
    # x_σ = (0.75 + 0.125, −0.75 + 0.5) = (0.875, −0.25), v = (−0.5, 3).
    noisy, velocity = flow_matching_targets(
        torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 2.0]]), torch.tensor([0.25])
    )
    torch.testing.assert_close(noisy, torch.tensor([[0.875, -0.25]]))
    torch.testing.assert_close(velocity, torch.tensor([[-0.5, 3.0]]))


@pytest.fixture(scope="module")
def mini_flow(tmp_path_factory):
    """What ``parrot mini train-flow`` writes after two steps, loaded through ``load_policy``."""
    from parrot_t2i.cli import main

    root = tmp_path_factory.mktemp("mini-flow")
    argv = ["mini", "train-flow", "--steps", "2", "--patch-size", "8", "--layers", "2", "--out", str(root / "model")]
    assert main([*argv, "--work-dir", str(root)]) == 0
    return root / "model", load_policy(str(root / "model"))


def test_train_flow_writes_a_model_load_policy_recognises(mini_flow, tiny_pixel_model):
    path, policy = mini_flow
    assert type(policy).__name__ == "PixelFlowPolicy" and isinstance(policy, Policy)
    assert policy.transformer.config.patch_size == 8  # --patch-size 8: 4×4 tokens
    assert policy.transformer.config.num_layers == 2
    card = (path / "README.md").read_text()
    assert "parrot mini train-flow --patch-size 8 --layers 2" in card and "2 joint blocks" in card
    # Loaded by path, a retrained model is still the mini world's (its PEN, words and checker), a
    # tiny pixel-space test model is not.
    assert is_mini_world_model(str(path)) and not is_mini_world_model(str(tiny_pixel_model))
    assert policy.resolution == 32 and policy.latent_shape() == (3, 32, 32)
    images = policy.decode(torch.zeros(1, 3, 32, 32))
    assert images.shape == (1, 3, 32, 32) and torch.allclose(images, torch.full_like(images, 0.5))


def test_train_flow_can_keep_the_unet_models_text_encoder(tmp_path):
    from transformers import CLIPTextModel

    from parrot_t2i.cli import main
    from parrot_t2i.mini import weights_path

    argv = ["mini", "train-flow", "--steps", "1", "--patch-size", "8", "--freeze-text-encoder"]
    assert main([*argv, "--out", str(tmp_path / "model"), "--work-dir", str(tmp_path)]) == 0
    kept = CLIPTextModel.from_pretrained(tmp_path / "model", subfolder="text_encoder").state_dict()
    shipped = CLIPTextModel.from_pretrained(weights_path("t2i"), subfolder="text_encoder").state_dict()
    assert all(torch.equal(kept[name], shipped[name]) for name in shipped)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "parrot mini train-flow --patch-size 8 --freeze-text-encoder" in card


def test_the_deterministic_chain_is_the_schedulers_euler_chain(mini_flow):
    _, policy = mini_flow
    cond, uncond = policy.encode(["a red circle on black"]), policy.encode_negative()
    ours = policy.sample(
        cond, uncond, CFG(3.0), generator=torch.Generator().manual_seed(0), stochastic=False, num_inference_steps=4
    )
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(policy.scheduler.config)
    scheduler.set_timesteps(4)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(guided(policy.denoise, x, t.expand(1), cond, uncond, CFG(3.0)), t, x).prev_sample
    torch.testing.assert_close(ours.latents[:, -1], x, atol=1e-5, rtol=0)


def test_its_training_transitions_reproduce_the_sampled_log_probs(mini_flow):
    _, policy = mini_flow
    policy.set_sampler(4, 0.7)
    cond = policy.encode(["a red circle", "a blue square"])
    uncond = policy.encode_negative().expand(2)
    trajectory = policy.sample(cond, uncond, CFG(5.0), generator=torch.Generator().manual_seed(1))
    steps, rows = torch.tensor([2, 0]), torch.arange(2)
    with torch.no_grad():
        mean, std = policy.step_mean_std(
            trajectory.latents[rows, steps], trajectory.timesteps[steps], cond, uncond, CFG(5.0)
        )
    recomputed = transition_log_prob(trajectory.latents[rows, steps + 1], mean, std)
    torch.testing.assert_close(recomputed, trajectory.log_probs[rows, steps], atol=1e-5, rtol=0)


def test_the_mini_flow_preset_trains_a_lora_on_it(mini_flow, tmp_path):
    from parrot_t2i.config import load_config
    from parrot_t2i.runs import open_run, run_policy
    from parrot_t2i.trainer import train

    folder, _ = mini_flow
    preset = load_config("mini-flow")
    assert (preset.model.pretrained, preset.model.trainable, preset.sample.eta) == ("builtin:mini-flow", "lora", 0.7)
    assert (preset.train.learning_rate, preset.train.kl_coef) == (3e-3, 0.01)
    default = load_config()
    assert preset.rewards == default.rewards and preset.objective == default.objective
    config = load_config(
        "mini-flow",
        [
            f"model.pretrained={folder}",
            "pen.pretrained=null",
            "train.pen=false",
            "sample.num_inference_steps=3",
            "sample.prompts_per_iteration=1",
            "sample.images_per_prompt=4",
            "train.num_iterations=1",
            "eval.file=null",
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    run_dir = train(config)
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["kl"] == pytest.approx(0.0, abs=1e-6)  # the preset's KL ran; zero while the LoRA is fresh
    trained = run_policy(*open_run(run_dir))
    assert any("lora" in n for n, _ in trained.transformer.named_parameters())


def test_builtin_mini_flow_without_its_weights_says_how_to_build_them(monkeypatch, tmp_path):
    import parrot_t2i.mini as mini
    from parrot_t2i.errors import ParrotError

    monkeypatch.setattr(mini, "WEIGHTS", tmp_path)
    with pytest.raises(ParrotError, match="rebuild them with `parrot mini train-flow`"):
        load_policy("builtin:mini-flow")
