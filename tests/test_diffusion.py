import pytest
import torch
from diffusers import DDIMScheduler

from parrot_t2i.diffusion import (
    CFG,
    Conditioning,
    classifier_free_guidance,
    ddim_step_log_prob,
    gaussian_kl_same_std,
    gaussian_log_prob,
    guided_noise,
    original_guided_noise,
    original_prompt_guidance,
    step_log_prob,
    transition_log_prob,
)
from parrot_t2i.policies.unet import T2IPolicy


def test_log_prob_convention_is_mean_over_dimensions():
    x, mean = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    std = torch.tensor([0.5, 1.0, 2.0]).reshape(3, 1, 1, 1)
    expected = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x).mean(dim=(1, 2, 3))
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected)


def test_step_kl_matches_torch_distributions():
    mean, ref = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    std = torch.tensor([0.5, 1.0, 0.0]).reshape(3, 1, 1, 1)
    safe = std.clamp(min=1e-3).expand_as(mean)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, safe), torch.distributions.Normal(ref, safe)
    ).mean(dim=(1, 2, 3))
    got = gaussian_kl_same_std(mean, ref, std)
    torch.testing.assert_close(got[:2], expected[:2])
    assert got[2] == 0  # a deterministic step has no KL term
    # By hand: means 1 apart everywhere, σ = 0.5: 1² / (2 · 0.25) = 2.
    assert gaussian_kl_same_std(torch.ones(1, 3), torch.zeros(1, 3), torch.full((1, 1), 0.5)).item() == pytest.approx(
        2.0
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prediction_type="epsilon"),
        dict(prediction_type="v_prediction"),
        dict(prediction_type="sample"),
        dict(prediction_type="epsilon", clip_sample=True),
        dict(prediction_type="epsilon", set_alpha_to_one=True, timestep_spacing="trailing"),
    ],
)
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_step_matches_diffusers_ddim_with_the_same_noise(kwargs, eta):
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **kwargs)
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(1)
    sample, output = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    step = scheduler.config.num_train_timesteps // 10
    for t in scheduler.timesteps:  # including the last step, where prev_t < 0 uses final_alpha_cumprod
        noise = torch.randn(2, 3, 8, 8, generator=generator)
        reference = scheduler.step(output, t, sample, eta=eta, variance_noise=noise).prev_sample
        mean = scheduler.step(output, t, sample, eta=eta, variance_noise=torch.zeros_like(noise)).prev_sample
        std = eta * scheduler._get_variance(t, t - step) ** 0.5
        _, scored = ddim_step_log_prob(scheduler, output, t, sample, eta, prev_sample=reference)
        if std > 0:
            expected = torch.distributions.Normal(mean, std).log_prob(reference).mean(dim=(1, 2, 3))
        else:  # deterministic last step: no density, defined as log-prob 0
            expected = torch.zeros(2)
        torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-5)
        # A drawn sample is the same mean plus our own noise.
        drawn, drawn_log_prob = ddim_step_log_prob(
            scheduler, output, t, sample, eta, generator=torch.Generator().manual_seed(0)
        )
        ours_noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(drawn, mean + std * ours_noise, atol=1e-5, rtol=1e-5)
        assert torch.isfinite(drawn_log_prob).all()


def test_per_sample_timesteps_equal_separate_steps():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(20)
    sample, output, prev = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = scheduler.timesteps[[0, 7, 19]]
    _, batched = ddim_step_log_prob(scheduler, output, t, sample, 1.0, prev_sample=prev)
    for i in range(3):
        _, alone = ddim_step_log_prob(
            scheduler, output[i : i + 1], t[i], sample[i : i + 1], 1.0, prev_sample=prev[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], alone)


def test_eta_zero_is_rejected():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_log_prob(scheduler, torch.zeros(1, 1, 2, 2), scheduler.timesteps[0], torch.zeros(1, 1, 2, 2), 0.0)


def test_classifier_free_guidance_formula():
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    assert classifier_free_guidance(u, c, 5.0).tolist() == [11.0, -3.0]
    assert classifier_free_guidance(u, c, 1.0).tolist() == c.tolist()


def test_original_prompt_guidance_eq5_and_its_identities():
    u, c, e = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0]), torch.tensor([0.0, 4.0])
    # 1 + 5·(3 − 1) + 2·(0 − 1) = 9;  2 + 5·(1 − 2) + 2·(4 − 2) = 1
    assert original_prompt_guidance(u, c, e, 5.0, 2.0).tolist() == [9.0, 1.0]
    assert (
        original_prompt_guidance(u, c, e, 5.0, 0.0).tolist() == classifier_free_guidance(u, c, 5.0).tolist()
    )  # w2 = 0
    # ĉ = c: plain CFG at w1 + w2
    assert original_prompt_guidance(u, c, c, 2.0, 3.0).tolist() == classifier_free_guidance(u, c, 5.0).tolist()


def test_original_guided_noise_batches_three_branches_in_one_call(tiny_pixel_model):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    calls = []
    handle = policy.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    orig, expanded, uncond = (
        policy.encode(["a cat", "a dog"]),
        policy.encode(["<reward 1> a cat, fluffy", "<reward 2> a dog"]),
        policy.encode(["", ""]),
    )
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500])
    eps = original_guided_noise(policy.unet, x, t, orig, expanded, uncond, 5.0, 5.0)
    handle.remove()
    assert calls == [6]  # one UNet call over [uncond; original; expanded]
    with torch.no_grad():
        e_u, e_c, e_e = (policy.unet(x, t, encoder_hidden_states=c.embeds).sample for c in (uncond, orig, expanded))
    torch.testing.assert_close(eps, e_u + 5.0 * (e_c - e_u) + 5.0 * (e_e - e_u), atol=1e-5, rtol=1e-4)
    same = original_guided_noise(policy.unet, x, t, orig, orig, uncond, 2.0, 3.0)
    torch.testing.assert_close(same, guided_noise(policy.unet, x, t, orig, uncond, 5.0), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model", ["tiny_pixel_model", "tiny_sd_model", "tiny_sdxl_model"])
def test_recomputed_log_probs_reproduce_sampling(model, request):
    policy = T2IPolicy.from_pretrained(str(request.getfixturevalue(model)))
    policy.set_sampler(6, 1.0)
    cond = policy.encode(["a red circle", "a blue square", "<reward 2> a cat"])
    uncond = policy.encode_negative().expand(3)  # SDXL: zeros and added conditioning ride along
    traj = policy.sample(cond, uncond, CFG(5.0), generator=torch.Generator().manual_seed(0))
    assert traj.latents.shape == (3, 7, *policy.latent_shape())
    assert traj.log_probs.shape == (3, 6)
    # Every step recomputed with per-sample timesteps in one shuffled batch, as training does.
    steps = torch.tensor([5, 0, 3])
    rows = torch.arange(3)
    recomputed = step_log_prob(
        policy.unet,
        policy.scheduler,
        traj.latents[rows, steps],
        traj.latents[rows, steps + 1],
        traj.timesteps[steps],
        cond,
        uncond,
        5.0,
        1.0,
    )
    assert (recomputed - traj.log_probs[rows, steps]).abs().max() <= 1e-5
    for j in range(6):  # and through the Policy interface, step by step
        mean, std = policy.step_mean_std(traj.latents[:, j], traj.timesteps[j].expand(3), cond, uncond, CFG(5.0))
        assert (transition_log_prob(traj.latents[:, j + 1], mean, std) - traj.log_probs[:, j]).abs().max() <= 1e-5
    images = policy.decode(traj.latents[:, -1])
    assert images.shape == (3, 3, policy.resolution, policy.resolution)
    assert 0 <= images.min() and images.max() <= 1


def test_guided_noise_batches_both_branches_in_one_call(tiny_pixel_model):
    policy = T2IPolicy.from_pretrained(str(tiny_pixel_model))
    calls = []
    handle = policy.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    cond, uncond = policy.encode(["a cat", "a dog"]), policy.encode(["", ""])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500])
    eps = guided_noise(policy.unet, x, t, cond, uncond, 4.0)
    handle.remove()
    assert calls == [4]  # one UNet call over [uncond; cond]
    with torch.no_grad():
        e_u = policy.unet(x, t, encoder_hidden_states=uncond.embeds).sample
        e_c = policy.unet(x, t, encoder_hidden_states=cond.embeds).sample
    torch.testing.assert_close(eps, e_u + 4.0 * (e_c - e_u), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model", ["tiny_pixel_model", "tiny_sd_model"])
def test_channels_last_gives_the_same_trajectory_and_gradients(model, request):
    """model.channels_last only changes memory layout: same samples, log-probs and gradients up
    to float rounding, and the UNet's first convolution really receives NHWC input."""
    results = []
    for channels_last in (False, True):
        policy = T2IPolicy.from_pretrained(str(request.getfixturevalue(model)))
        if channels_last:
            policy.use_channels_last()
        seen = []
        policy.unet.conv_in.register_forward_hook(
            lambda module, args, out, seen=seen: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        policy.set_sampler(4, 1.0)
        cond, uncond = policy.encode(["a red circle", "a cat"]), policy.encode_negative().expand(2)
        traj = policy.sample(cond, uncond, CFG(5.0), generator=torch.Generator().manual_seed(0))
        policy.set_trainable("full")
        t = traj.timesteps[1].expand(2)
        step_log_prob(
            policy.unet, policy.scheduler, traj.latents[:, 1], traj.latents[:, 2], t, cond, uncond, 5.0, 1.0
        ).sum().backward()
        grad = policy.unet.conv_in.weight.grad.contiguous()
        assert set(seen) == {channels_last}
        results.append((traj, policy.decode(traj.latents[:, -1]), grad))
    (a, images_a, grad_a), (b, images_b, grad_b) = results
    torch.testing.assert_close(b.latents, a.latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.log_probs, a.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(images_b, images_a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad_b, grad_a, atol=1e-5, rtol=1e-3)
    assert grad_a.abs().sum() > 0


def test_conditioning_indexing_and_cat():
    c = Conditioning(torch.arange(6.0).reshape(3, 2, 1), {"time_ids": torch.arange(3.0)[:, None]})
    picked = c[torch.tensor([2, 0])]
    assert picked.embeds[:, 0, 0].tolist() == [4.0, 0.0] and picked.added["time_ids"][:, 0].tolist() == [2.0, 0.0]
    assert len(Conditioning.cat([c, picked])) == 5
    one = c[[1]].expand(4)
    assert one.embeds.shape == (4, 2, 1) and one.added["time_ids"][:, 0].tolist() == [1.0] * 4
