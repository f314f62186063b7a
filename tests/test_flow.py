"""The stochastic flow-matching steps: hand-worked numbers, the Euler limit against diffusers'
FlowMatchEulerDiscreteScheduler, the density, and the σ = 1 guard."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from parrot_t2i.diffusion import CFG, Eq5, transition_log_prob
from parrot_t2i.flow import flow_cps_step_mean_std, flow_sde_step_mean_std, flow_step_mean_std


def test_sde_step_by_hand():
    # σ = 0.5, σ' = 0.25, a = 0.5: std_t = 0.5·sqrt(0.5 / 0.5) = 0.5, dt = −0.25;
    # mean = x·(1 + 0.25/1·(−0.25)) + v·(1 + 0.25·0.5/1)·(−0.25) = 0.9375·x − 0.28125·v;
    # the transition's std = std_t·sqrt(−dt) = 0.5·0.5 = 0.25.
    x, v = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 4.0]])
    mean, std = flow_sde_step_mean_std(x, v, 0.5, 0.25, noise_level=0.5, sigma_max=0.9)
    torch.testing.assert_close(mean, torch.tensor([[0.9375 * 2 - 0.28125, -0.9375 - 0.28125 * 4]]))
    assert std.item() == pytest.approx(0.25)


def test_cps_step_by_hand():
    # σ = 0.75, σ' = 0.5, a = 1/3: s = 0.5·sin(π/6) = 0.25; x̂₀ = x − 0.75·v, ε̂ = x + 0.25·v;
    # mean = 0.5·x̂₀ + sqrt(0.25 − 0.0625)·ε̂. The noise coefficient stays σ': 0.1875 + s² = σ'².
    x, v = torch.tensor([[1.0, 2.0]]), torch.tensor([[-2.0, 0.5]])
    mean, std = flow_cps_step_mean_std(x, v, 0.75, 0.5, noise_level=1 / 3)
    x0, eps = x - 0.75 * v, x + 0.25 * v
    torch.testing.assert_close(mean, 0.5 * x0 + math.sqrt(0.1875) * eps)
    assert std.item() == pytest.approx(0.25) and 0.1875 + std.item() ** 2 == pytest.approx(0.5**2)


@pytest.mark.parametrize("kind", ["sde", "cps"])
def test_without_noise_both_are_the_schedulers_euler_step(kind):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(8)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(3, 4, 8, 8, generator=generator)
        expected = scheduler.step(v, t, x).prev_sample  # the scheduler counts its own steps
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        mean, std = flow_step_mean_std(kind, x, v, sigma, sigma_next, 1e-12, float(scheduler.sigmas[1]))
        torch.testing.assert_close(mean, expected, atol=1e-6, rtol=0)
        assert std.max() < 1e-6
        x = expected


@pytest.mark.parametrize("kind", ["sde", "cps"])
def test_log_prob_is_the_gaussian_density_mean_over_dimensions(kind):
    generator = torch.Generator().manual_seed(1)
    x, v, noise = (torch.randn(2, 3, 4, 4, generator=generator) for _ in range(3))
    sigma = torch.tensor([0.9, 0.4])  # each sample at its own step
    mean, std = flow_step_mean_std(kind, x, v, sigma, sigma - 0.1, 0.7, 0.95)
    assert std.shape == (2, 1, 1, 1) and (std > 0).all()
    prev = mean + std * noise
    expected = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
    torch.testing.assert_close(transition_log_prob(prev, mean, std), expected, atol=1e-5, rtol=0)


def test_sde_noise_at_sigma_one_uses_the_largest_sigma_below_one():
    x, v = torch.ones(1, 2), torch.zeros(1, 2)
    _, std = flow_sde_step_mean_std(x, v, 1.0, 0.9, noise_level=0.7, sigma_max=0.95)
    assert std.item() == pytest.approx(0.7 * math.sqrt(1 / 0.05) * math.sqrt(0.1))
    with pytest.raises(ValueError, match="unknown flow sampler 'ode'"):
        flow_step_mean_std("ode", x, v, 1.0, 0.9, 0.7, 0.95)


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    from diffusers import StableDiffusion3Pipeline
    from tiny_models import build_tiny_sd3

    folder = build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))
    return StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)  # SD3 without T5


def sd3_conditioning(pipe, prompts):
    from parrot_t2i.diffusion import Conditioning

    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompts, prompts, None, do_classifier_free_guidance=True
    )
    return (
        Conditioning(embeds, {"pooled_projections": pooled}),
        Conditioning(negative, {"pooled_projections": negative_pooled}),
        (embeds, negative, pooled, negative_pooled),
    )


def test_a_deterministic_chain_is_the_sd3_pipelines_own_sample(tiny_sd3):
    from parrot_t2i.flow import sample_flow_trajectory

    prompts = ["a red circle", "a blue square"]
    cond, uncond, (embeds, negative, pooled, negative_pooled) = sd3_conditioning(tiny_sd3, prompts)
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = tiny_sd3(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled,
        latents=latents,
        num_inference_steps=4,
        guidance_scale=5.0,
        output_type="latent",
    ).images
    tiny_sd3.scheduler.set_timesteps(4)
    with torch.no_grad():
        ours = sample_flow_trajectory(
            tiny_sd3.transformer, tiny_sd3.scheduler, cond, uncond, latents, CFG(5.0), stochastic=False
        )
    torch.testing.assert_close(ours.latents[:, -1], expected, atol=1e-5, rtol=0)
    assert ours.latents.shape == (2, 5, 4, 32, 32) and (ours.log_probs == 0).all()


@pytest.mark.parametrize("kind", ["sde", "cps"])
def test_recomputed_log_probs_match_sampling(tiny_sd3, kind):
    from parrot_t2i.flow import flow_velocity, sample_flow_trajectory

    cond, uncond, _ = sd3_conditioning(tiny_sd3, ["a red circle", "a green cross"])
    scheduler = tiny_sd3.scheduler
    scheduler.set_timesteps(4)
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        trajectory = sample_flow_trajectory(
            tiny_sd3.transformer, scheduler, cond, uncond, latents, CFG(4.5), torch.Generator().manual_seed(5), kind
        )
        sigmas = scheduler.sigmas
        for i, t in enumerate(scheduler.timesteps):
            x, prev = trajectory.latents[:, i], trajectory.latents[:, i + 1]
            v = flow_velocity(tiny_sd3.transformer, x, t.expand(2), cond, uncond, CFG(4.5))
            mean, std = flow_step_mean_std(kind, x, v, sigmas[i], sigmas[i + 1], 0.7, float(sigmas[1]))
            torch.testing.assert_close(
                transition_log_prob(prev, mean, std), trajectory.log_probs[:, i], atol=1e-5, rtol=0
            )
    assert trajectory.log_probs.shape == (2, 4) and torch.isfinite(trajectory.log_probs).all()


@pytest.fixture(scope="module")
def sd3_policy(tmp_path_factory):
    from tiny_models import build_tiny_sd3

    from parrot_t2i.sd3 import SD3Policy

    return SD3Policy.from_pretrained(str(build_tiny_sd3(tmp_path_factory.mktemp("sd3-policy"))), t5=False)


def test_the_sd3_policy_samples_and_decodes_as_the_pipeline(sd3_policy):
    prompts = ["a red circle", "a blue square"]
    cond, uncond = sd3_policy.encode(prompts), sd3_policy.encode_negative()
    ours = sd3_policy.sample(
        cond,
        uncond.expand(2),
        CFG(5.0),
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=4,
    )
    expected = sd3_policy.pipe(
        prompt=prompts,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    torch.testing.assert_close(sd3_policy.decode(ours.latents[:, -1]), expected, atol=1e-5, rtol=0)
    assert sd3_policy.resolution == 32 and sd3_policy.latent_shape() == (4, 32, 32)
    # Eq. 5 with w2 = 0 is CFG on the original prompt, whatever the expansion: three branches, one call.
    expanded = sd3_policy.encode(["<reward 1> a red circle, vivid", "<reward 2> a blue square at noon"])
    eq5 = sd3_policy.sample(
        expanded,
        uncond.expand(2),
        Eq5(5.0, 0.0),
        original=cond,
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=4,
    )
    torch.testing.assert_close(eq5.latents[:, -1], ours.latents[:, -1], atol=1e-5, rtol=0)


def test_the_sd3_policys_training_transitions_reproduce_its_samples(sd3_policy):
    sd3_policy.set_sampler(4, 0.7)
    cond = sd3_policy.encode(["a red circle", "a green cross"])
    uncond = sd3_policy.encode_negative().expand(2)
    trajectory = sd3_policy.sample(cond, uncond, CFG(4.5), generator=torch.Generator().manual_seed(1))
    steps, rows = torch.tensor([3, 0]), torch.arange(2)  # each sample at its own step, as training batches them
    with torch.no_grad():
        mean, std = sd3_policy.step_mean_std(
            trajectory.latents[rows, steps], trajectory.timesteps[steps], cond, uncond, CFG(4.5)
        )
    recomputed = transition_log_prob(trajectory.latents[rows, steps + 1], mean, std)
    torch.testing.assert_close(recomputed, trajectory.log_probs[rows, steps], atol=1e-5, rtol=0)


def test_one_rl_iteration_on_a_tiny_sd3_trains_its_lora_and_saves_it_for_the_pipeline(tmp_path):
    """Pareto selection, identifiers, the PEN trained jointly and the KL, on the flow policy."""
    from diffusers import StableDiffusion3Pipeline
    from tiny_models import build_tiny_sd3

    from parrot_t2i.config import load_config
    from parrot_t2i.policy import Policy
    from parrot_t2i.runs import open_run, run_policy
    from parrot_t2i.sd3 import SD3Policy
    from parrot_t2i.trainer import train

    model = build_tiny_sd3(tmp_path / "sd3")
    config = load_config(
        "tiny",
        [
            f"model.pretrained={model}",
            "model.trainable=lora",
            "sample.num_inference_steps=3",
            "sample.eta=0.7",  # the flow SDE's a
            "train.num_iterations=1",
            "train.kl_coef=0.01",  # the reference: the transformer with its adapters off
            "eval.file=null",
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    run_dir = train(config)
    policy = run_policy(*open_run(run_dir))
    assert isinstance(policy, SD3Policy) and isinstance(policy, Policy)
    checkpoint = open_run(run_dir)[1]
    assert (checkpoint / "pytorch_lora_weights.safetensors").is_file()
    # The plain pipeline loads our LoRA and samples what our policy samples.
    pipe = StableDiffusion3Pipeline.from_pretrained(model, text_encoder_3=None, tokenizer_3=None)
    pipe.load_lora_weights(checkpoint)
    images = pipe(
        prompt=["a red circle"],
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    ours = policy.sample(
        policy.encode(["a red circle"]),
        policy.encode_negative(),
        CFG(5.0),
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=3,
    )
    torch.testing.assert_close(policy.decode(ours.latents[:, -1]), images, atol=1e-5, rtol=0)
    base = SD3Policy.from_pretrained(str(model), t5=False)
    untrained = base.sample(
        base.encode(["a red circle"]),
        base.encode_negative(),
        CFG(5.0),
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=3,
    )
    assert (untrained.latents[:, -1] - ours.latents[:, -1]).abs().max() > 0  # the LoRA changed the model
    from parrot_t2i.cli import main

    for source in (["--model", str(model)], ["--run", str(run_dir)]):  # Eq. 5 on the flow policy, through the CLI
        out = tmp_path / f"{source[0][2:]}.png"
        assert main(["generate", "a red circle", *source, "--n", "1", "--steps", "2", "--out", str(out)]) == 0
        assert out.is_file()
