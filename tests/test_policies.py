"""The suite every flow-matching policy passes (docs/ARCHITECTURE.md, "Adding a backbone"), run on
tiny SD3 (without T5, and with it) and tiny FLUX.1 (guidance-distilled like FLUX.1-dev, and not,
like FLUX.1-schnell), each built from configs and loaded through ``load_policy``: the deterministic
chain is the diffusers pipeline's own sample; Eq. 5 with w2 = 0 is CFG on the original prompt; the
training transitions reproduce the sampled log-probs; one ``parrot train`` iteration trains a LoRA
the plain pipeline loads and samples with as we do. The UNet policy's equivalents are in test_t2i.py."""

from __future__ import annotations

import pytest
import torch

from parrot_t2i.config import ModelConfig
from parrot_t2i.diffusion import CFG, Eq5, transition_log_prob
from parrot_t2i.policies import Policy, load_policy

RESOLUTION = 32
BACKBONES = ["sd3", "sd3-t5", "flux-dev", "flux-schnell"]


def build(kind: str, path):
    from tiny_models import build_tiny_flux, build_tiny_sd3

    if kind.startswith("sd3"):
        return build_tiny_sd3(path, t5=kind == "sd3-t5")
    return build_tiny_flux(path, guidance_embeds=kind == "flux-dev")


@pytest.fixture(scope="module", params=BACKBONES)
def backbone(request, tmp_path_factory):
    """(kind, model folder, policy) for one tiny backbone."""
    folder = build(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, folder, load_policy(str(folder), ModelConfig(resolution=RESOLUTION))


def pipeline_images(kind: str, pipe, prompts: list[str], steps: int, scale: float, seed: int) -> torch.Tensor:
    """The diffusers pipeline's own images for CFG at ``scale`` (FLUX: true CFG against the empty prompt)."""
    guidance = {"guidance_scale": scale} if kind.startswith("sd3") else {"true_cfg_scale": scale, "negative_prompt": ""}
    return pipe(
        prompt=prompts,
        num_inference_steps=steps,
        height=RESOLUTION,
        width=RESOLUTION,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        **guidance,
    ).images


def test_load_policy_recognises_each_backbone_from_its_model_index(backbone):
    kind, _, policy = backbone
    name = {"sd3": "SD3Policy", "flux": "FluxPolicy"}[kind.split("-")[0]]
    assert type(policy).__name__ == name and isinstance(policy, Policy)
    assert policy.resolution == RESOLUTION
    if kind.startswith("sd3"):
        assert (policy.pipe.text_encoder_3 is not None) == (kind == "sd3-t5")


def test_the_deterministic_chain_is_the_pipelines_own_sample(backbone):
    kind, _, policy = backbone
    prompts = ["a red circle", "a blue square"]
    cond, uncond = policy.encode(prompts), policy.encode_negative()
    ours = policy.sample(
        cond, uncond, CFG(3.0), generator=torch.Generator().manual_seed(0), stochastic=False, num_inference_steps=4
    )
    expected = pipeline_images(kind, policy.pipe, prompts, 4, 3.0, seed=0)
    torch.testing.assert_close(policy.decode(ours.latents[:, -1]), expected, atol=1e-5, rtol=0)
    assert ours.latents.shape == (2, 5, *policy.latent_shape()) and (ours.log_probs == 0).all()
    # Eq. 5 with w2 = 0 is CFG on the original prompt, whatever the expansion: three branches, one call.
    expanded = policy.encode(["<reward 1> a red circle, vivid", "<reward 2> a blue square at noon"])
    eq5 = policy.sample(
        expanded,
        uncond,
        Eq5(3.0, 0.0),
        original=cond,
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=4,
    )
    torch.testing.assert_close(eq5.latents[:, -1], ours.latents[:, -1], atol=1e-5, rtol=0)


def test_cfg_one_is_the_single_branch_pipeline_sample(backbone):
    """Training and sampling without CFG (issue 17's speed option) run one branch, as the pipelines do
    at guidance 1; for FLUX.1-dev this is how its pipeline samples (distilled guidance only)."""
    kind, _, policy = backbone
    cond = policy.encode(["a green cross"])
    ours = policy.sample(
        cond,
        policy.encode_negative(),
        CFG(1.0),
        generator=torch.Generator().manual_seed(2),
        stochastic=False,
        num_inference_steps=3,
    )
    expected = pipeline_images(kind, policy.pipe, ["a green cross"], 3, 1.0, seed=2)
    torch.testing.assert_close(policy.decode(ours.latents[:, -1]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["sde", "cps"])
def test_training_transitions_reproduce_the_sampled_log_probs(backbone, sampler, monkeypatch):
    _, _, policy = backbone
    monkeypatch.setattr(policy, "sampler", sampler)
    policy.set_sampler(4, 0.7)
    cond = policy.encode(["a red circle", "a green cross"])
    uncond = policy.encode_negative().expand(2)
    trajectory = policy.sample(cond, uncond, CFG(4.5), generator=torch.Generator().manual_seed(1))
    steps, rows = torch.tensor([3, 0]), torch.arange(2)  # each sample at its own step, as training batches them
    with torch.no_grad():
        mean, std = policy.step_mean_std(
            trajectory.latents[rows, steps], trajectory.timesteps[steps], cond, uncond, CFG(4.5)
        )
    recomputed = transition_log_prob(trajectory.latents[rows, steps + 1], mean, std)
    torch.testing.assert_close(recomputed, trajectory.log_probs[rows, steps], atol=1e-5, rtol=0)
    # CPS lands on σ' = 0 without noise: its last step has no density (Flow-GRPO's SDE keeps noise there).
    stochastic = trajectory.log_probs if sampler == "sde" else trajectory.log_probs[:, :-1]
    assert torch.isfinite(trajectory.log_probs).all() and (stochastic != 0).all()
    assert policy.last_step_deterministic == (sampler == "cps")  # so the trainer leaves that step out


def test_learnt_identifiers_in_every_text_encoder(backbone, tmp_path):
    """One trainable vector per identifier in each encoder (SD3: two CLIPs, and T5 when loaded; FLUX:
    CLIP and T5), read only at the identifier's tokens, reached by gradients, saved and reloaded."""
    from parrot_t2i.identifiers import identifier_strings
    from parrot_t2i.learned_identifiers import embedding_file

    kind, folder, _ = backbone
    policy = load_policy(str(folder), ModelConfig(resolution=RESOLUTION))  # its own: tokens get added
    tables = policy.learn_identifiers(identifier_strings(2))
    assert len(tables) == {"sd3": 2, "sd3-t5": 3}.get(kind, 2)
    assert all(t.shape[0] == 2 and t.requires_grad and t.dtype == torch.float32 for t in tables)
    prompts = ["<reward 1> a red circle", "<reward 2> a red circle", "a red circle"]
    start = policy.encode(prompts)
    with torch.no_grad():
        for table in tables:
            table[1] += torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0))
    moved = policy.encode(prompts)
    for name, before, after in [
        ("embeds", start.embeds, moved.embeds),
        ("pooled", *(c.added["pooled_projections"] for c in (start, moved))),
    ]:
        torch.testing.assert_close(after[[0, 2]], before[[0, 2]], msg=name)  # "<reward 2>" alone moved
        assert (after[1] - before[1]).abs().max() > 1e-4, name
    cond = policy.encode(prompts[1:2], grad=True)
    (cond.embeds.sum() + cond.added["pooled_projections"].sum()).backward()
    assert all(t.grad[1].abs().sum() > 0 and t.grad[0].abs().sum() == 0 for t in tables)
    policy.identifiers.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(embedding_file(i) for i in range(len(tables)))
    again = load_policy(str(folder), ModelConfig(resolution=RESOLUTION))
    again.learn_identifiers(identifier_strings(2))
    again.identifiers.load(tmp_path)
    torch.testing.assert_close(again.encode(prompts).embeds, moved.embeds)


@pytest.mark.parametrize("kind", ["sd3", "flux-dev"])
def test_one_rl_iteration_trains_a_lora_the_plain_pipeline_loads(tmp_path, kind):
    """Pareto selection, identifiers, the PEN trained jointly and the KL (adapters off), through
    ``parrot train``; the checkpoint's LoRA in the plain pipeline samples what our policy samples."""
    from parrot_t2i.cli import main
    from parrot_t2i.config import load_config
    from parrot_t2i.runs import open_run, run_policy
    from parrot_t2i.trainer import train

    model = build(kind, tmp_path / kind)
    config = load_config(
        "tiny",
        [
            f"model.pretrained={model}",
            "model.trainable=lora",
            f"model.resolution={RESOLUTION}",
            "sample.num_inference_steps=3",
            "sample.eta=0.7",  # the flow SDE's a
            "train.num_iterations=1",
            "train.kl_coef=0.01",
            "model.train_identifiers=true",
            "eval.file=null",
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    run_dir = train(config)
    policy = run_policy(*open_run(run_dir))
    checkpoint = open_run(run_dir)[1]
    assert (checkpoint / "pytorch_lora_weights.safetensors").is_file()
    assert policy.identifiers is not None and (checkpoint / "identifier_embeddings_2.safetensors").is_file()
    base = load_policy(str(model), ModelConfig(resolution=RESOLUTION))
    base.pipe.load_lora_weights(checkpoint)  # the plain pipeline's own LoRA loading
    images = pipeline_images(kind, base.pipe, ["a red circle"], 3, 5.0, seed=0)
    ours = policy.sample(
        policy.encode(["a red circle"]),
        policy.encode_negative(),
        CFG(5.0),
        generator=torch.Generator().manual_seed(0),
        stochastic=False,
        num_inference_steps=3,
    )
    torch.testing.assert_close(policy.decode(ours.latents[:, -1]), images, atol=1e-5, rtol=0)
    base.pipe.unload_lora_weights()
    untrained = pipeline_images(kind, base.pipe, ["a red circle"], 3, 5.0, seed=0)
    assert (untrained - images).abs().max() > 0  # the LoRA changed the model
    # Eq. 5 on the flow policy, through the CLI (a bare model samples at its own resolution: SD3's is 32 px here)
    for source in (["--run", str(run_dir)], ["--model", str(model)])[: 2 if kind == "sd3" else 1]:
        out = tmp_path / f"{source[0][2:]}.png"
        assert main(["generate", "a red circle", *source, "--n", "1", "--steps", "2", "--out", str(out)]) == 0
        assert out.is_file()


def test_a_hub_id_in_the_cache_is_recognised_offline(tmp_path, monkeypatch):
    """``load_policy("org/name")`` reads the cached snapshot's model_index.json: FLUX by hub id."""
    import huggingface_hub.constants

    repo = tmp_path / "models--tiny--flux"
    build("flux-dev", repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    policy = load_policy("tiny/flux", ModelConfig(resolution=RESOLUTION))
    assert type(policy).__name__ == "FluxPolicy" and policy.latent_shape() == (256, 4)
