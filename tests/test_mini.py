"""The mini world: scene generator, grammar, tokenizer, the resumable fit loop, and every shipped
model loaded through its real ``from_pretrained`` path."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from parrot_t2i.config import ConfigError
from parrot_t2i.fit import FitConfig, fit, step_generator
from parrot_t2i.mini import weights_path
from parrot_t2i.mini.nets import AlignmentModel, AttributeChecker, PreferenceModel
from parrot_t2i.mini.tokenizer import IDENTIFIERS, build_tokenizer
from parrot_t2i.mini.train_pen import PEN_TEMPLATE
from parrot_t2i.mini.train_rewards import utility
from parrot_t2i.mini.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    Scene,
    caption,
    parse_prompt,
    prompt_split,
    random_scene,
    render,
    scene_dict,
    short_prompt,
    training_caption,
)
from parrot_t2i.policies.unet import T2IPolicy
from parrot_t2i.rewards import build_reward
from parrot_t2i.rewards.mini import stripe_energy

SCENE = Scene("circle", "red", "dark blue", "large", "left", "vivid", "plain", "sharp", "bright")


def variant(**changes: str) -> Scene:
    return Scene(**{**scene_dict(SCENE), **changes})


def scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(n)]


# ----------------------------------------------------------------------------- generator


def test_render_is_deterministic_and_in_range():
    batch = scenes(16)
    a, b = render(batch, torch.Generator().manual_seed(3)), render(batch, torch.Generator().manual_seed(3))
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, render(batch, torch.Generator().manual_seed(4)))  # jitter follows the generator


def test_render_pixels_follow_the_attributes():
    image = render([SCENE], jitter=False)[0]
    lift = lambda rgb: torch.tensor(rgb) * 0.8 + 0.2
    torch.testing.assert_close(image[:, 16, 9], lift(COLOURS["red"]))  # the shape's centre, at the left
    torch.testing.assert_close(image[:, 2, 30], lift(BACKGROUNDS["dark blue"]))  # a far corner
    dim = render([variant(lighting="dim")], jitter=False)[0]
    torch.testing.assert_close(dim, image.sub(0.2).div(0.8).mul(0.65))
    muted = render([variant(saturation="muted")], jitter=False)[0][:, 16, 9]
    assert muted.max() - muted.min() < 0.5 * (image[:, 16, 9].max() - image[:, 16, 9].min())
    striped = render([variant(pattern="striped")], jitter=False)[0]
    outside = (image - lift(BACKGROUNDS["dark blue"])[:, None, None]).abs().sum(0) < 1e-5  # pure background
    assert (striped - image).abs().sum(0)[~outside].max() > 0.3 and (striped - image)[:, outside].abs().max() < 1e-6
    gradient = lambda x: (x[:, 1:] - x[:, :-1]).square().mean()
    assert gradient(render([variant(focus="blurred")], jitter=False)[0]) < 0.7 * gradient(image)
    for position, (x, y) in {"right": (23, 16), "top": (16, 9), "bottom": (16, 23), "center": (16, 16)}.items():
        moved = render([variant(position=position)], jitter=False)[0]
        torch.testing.assert_close(moved[:, y, x], lift(COLOURS["red"]))
    small = render([variant(size="small")], jitter=False)[0]
    background = lambda x: ((x - lift(BACKGROUNDS["dark blue"])[:, None, None]).abs().sum(0) > 0.3).sum()
    assert background(small) < 0.5 * background(image)


# ----------------------------------------------------------------------------- grammar


def test_caption_names_every_attribute_and_parses_back():
    assert caption(SCENE) == "a large vivid red circle at the left on a dark blue background, plain, sharp, bright"
    assert (
        short_prompt(SCENE) == "a red circle"
        and short_prompt(SCENE, with_background=True) == "a red circle on a dark blue background"
    )
    for scene in scenes(200):
        assert parse_prompt(caption(scene)) == scene_dict(scene)


def test_training_captions_name_a_subset_of_the_scene():
    rng = random.Random(0)
    seen_empty, lengths = 0, set()
    for scene in scenes(500):
        text = training_caption(scene, rng)
        seen_empty += text == ""
        named = parse_prompt(text)
        assert named.items() <= scene_dict(scene).items()
        lengths.add(len(named))
    assert 25 < seen_empty < 75  # about 10% empty, for classifier-free guidance
    assert min(lengths) <= 2 and 9 in lengths  # from bare to full captions


def test_prompt_split_is_disjoint_and_covers_the_grammar():
    train, held = prompt_split()
    assert len(held) == 30 and len(train) == 24 + 90 and not set(train) & set(held)
    assert prompt_split() == (train, held)
    for prompt in held:
        assert set(parse_prompt(prompt)) == {"shape", "colour", "background"}


def test_tokenizer_is_word_level_and_carries_identifiers(tmp_path):
    build_tokenizer().save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for scene in scenes(50):
        ids = tokenizer(caption(scene)).input_ids
        assert tokenizer.unk_token_id not in ids and len(ids) <= tokenizer.model_max_length
    ids = tokenizer("<reward 3> a red circle").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "<reward 3>", "a", "red", "circle", "<eos>"]
    assert all(len(tokenizer(identifier, add_special_tokens=False).input_ids) == 1 for identifier in IDENTIFIERS)
    assert not any(token in tokenizer.all_special_tokens for token in IDENTIFIERS)  # ordinary tokens
    assert tokenizer.decode(tokenizer(caption(SCENE)).input_ids, skip_special_tokens=True) == caption(SCENE)


# ----------------------------------------------------------------------------- the fit loop


def _toy(steps: int, work_dir, resume: bool = True, crash_at: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(step: int):
        if step == crash_at:
            raise KeyboardInterrupt
        x = torch.randn(16, 4, generator=step_generator(0, step))
        return (model(x).squeeze(1) - x.sum(1)).pow(2).mean(), {}

    cfg = FitConfig(steps=steps, learning_rate=1e-2, warmup_steps=2, ema_decay=0.9, checkpoint_every=3)
    return fit(model, loss_fn, cfg, work_dir, desc="toy", resume=resume)


def test_fit_resumes_bit_for_bit(tmp_path):
    straight = _toy(8, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _toy(8, tmp_path / "b", crash_at=7)  # interrupted during step 8, after the step-6 checkpoint...
    resumed = _toy(8, tmp_path / "b")  # ...and continued from step 7
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(next(_toy(8, tmp_path / "b", resume=False).parameters()), torch.zeros(8, 4))


# ----------------------------------------------------------------------------- shipped models


def test_shipped_t2i_loads_like_stable_diffusion():
    policy = T2IPolicy.from_pretrained("builtin:mini")
    assert policy.vae is None and policy.resolution == 32 and policy.latent_shape() == (3, 32, 32)
    assert (
        policy.scheduler.config.prediction_type == "v_prediction"
        and policy.scheduler.config.timestep_spacing == "trailing"
    )
    assert all(len(policy.tokenizer(i, add_special_tokens=False).input_ids) == 1 for i in IDENTIFIERS)
    params = sum(p.numel() for p in policy.unet.parameters())
    assert 1.3e6 < params < 1.5e6


def test_shipped_checker_reads_procedural_images():
    checker = AttributeChecker.from_pretrained(weights_path("checker"))
    batch = scenes(128, seed=11)
    predicted = checker.predict(render(batch, torch.Generator().manual_seed(11)))
    for name in ATTRIBUTES:
        accuracy = sum(p == getattr(s, name) for p, s in zip(predicted[name], batch)) / len(batch)
        assert accuracy >= 0.9, (name, accuracy)


def test_checker_prompt_hits_judge_what_the_prompt_names():
    checker = AttributeChecker.from_pretrained(weights_path("checker"))
    image = render([SCENE], jitter=False).expand(3, -1, -1, -1)  # a red circle on dark blue
    prompts = ["a red circle on a dark blue background", "a blue circle on a dark blue background", "a red circle"]
    hits = checker.prompt_hits(image, prompts, ("shape", "colour", "background"))
    assert hits == {"shape": [True, True, True], "colour": [True, False, True], "background": [True, True, False]}


def test_shipped_alignment_prefers_the_true_caption():
    reward = build_reward("mini_alignment")
    assert isinstance(reward.model, AlignmentModel)
    image = render([SCENE], jitter=False).expand(4, -1, -1, -1)
    texts = [
        "a red circle on a dark blue background",
        "a blue circle on a dark blue background",
        "a red square on a dark blue background",
        "a red circle on a white background",
    ]
    scores = reward(image, texts)
    assert scores.argmax() == 0 and scores[0] > 0.3


def test_shipped_preference_follows_its_rule():
    reward = build_reward("mini_preference")
    assert isinstance(reward.model, PreferenceModel)
    batch = scenes(256, seed=5)
    scores = reward(render(batch, torch.Generator().manual_seed(5)), [""] * len(batch))
    assert ((scores > 0) & (scores < 1)).all()
    pairs = [(i, j) for i in range(0, 256, 2) for j in (i + 1,) if abs(utility(batch[i]) - utility(batch[j])) >= 1]
    agree = sum((scores[i] > scores[j]) == (utility(batch[i]) > utility(batch[j])) for i, j in pairs) / len(pairs)
    assert agree >= 0.85


def test_shipped_pen_expands_prompts_faithfully():
    from parrot_t2i.pen import PromptExpander

    path = weights_path("pen")
    pen = PromptExpander(GPT2LMHeadModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), PEN_TEMPLATE)
    prompts = ["a red circle", "a green cross on a beige background"] * 8
    expansions = pen.sample(prompts, seed=0).texts
    faithful = 0
    for prompt, text in zip(prompts, expansions):
        named = parse_prompt(text)
        faithful += parse_prompt(prompt).items() <= named.items() and len(named) == len(ATTRIBUTES)
    assert faithful >= 14, expansions


def test_analytic_rewards_by_hand():
    grey = torch.full((1, 3, 32, 32), 0.5)
    torch.testing.assert_close(build_reward("mini_sentiment")(grey, [""]), torch.sigmoid(torch.tensor([-0.8])))
    torch.testing.assert_close(
        build_reward("mini_aesthetic")(grey, [""]), torch.zeros(1)
    )  # no contrast, edges or subject
    aesthetic = build_reward("mini_aesthetic")
    left, centre = render([variant(position="left"), variant(position="center")], jitter=False)
    assert aesthetic(left[None], [""]) > aesthetic(centre[None], [""]) + 0.2  # the thirds composition term
    sentiment = build_reward("mini_sentiment")
    bright, dark = render([variant(background="beige"), variant(background="black", lighting="dim")], jitter=False)
    assert sentiment(bright[None], [""]) > 0.5 > sentiment(dark[None], [""])


def test_stripe_energy_by_hand():
    # An image that is all diagonal stripes of amplitude 0.2 in luma (grey, so luma = the value):
    # the coefficient is A/2 = 0.1, up to the leakage of 32 px not holding a whole number of periods.
    coords = torch.arange(32.0) + 0.5
    bands = 0.5 + 0.2 * torch.sin(2 * torch.pi * (coords[:, None] + coords[None, :]) / 5 + 1.0)
    energy = stripe_energy(bands.expand(1, 3, 32, 32))
    assert abs(energy.item() - 0.1) < 0.003
    assert stripe_energy(torch.full((1, 3, 32, 32), 0.7)).item() < 1e-6  # flat: no detail at all
    plain, striped, blurred = render(
        [
            variant(size="large"),
            variant(size="large", pattern="striped"),
            variant(size="large", pattern="striped", focus="blurred"),
        ],
        jitter=False,
    )
    detail = build_reward("mini_detail")
    scores = detail(torch.stack([plain, striped, blurred]), [""] * 3)
    assert scores[1] > 0.5 > 0.05 > scores[0] and scores[2] < 0.05, scores  # only crisp stripes pass


def test_mini_detail_threshold_and_bad_width():
    image = torch.full((1, 3, 32, 32), 0.5)
    at_zero = build_reward({"name": "mini_detail", "args": {"threshold": 0.0}})
    assert at_zero(image, [""]).item() == pytest.approx(0.5)  # σ(0): a flat image sits at the threshold
    with pytest.raises(ConfigError, match="width must be positive"):
        build_reward({"name": "mini_detail", "args": {"width": 0.0}})


@pytest.mark.parametrize(
    "name", ["mini_alignment", "mini_preference", "mini_aesthetic", "mini_sentiment", "mini_detail"]
)
def test_mini_rewards_accept_other_resolutions(name):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    scores = build_reward(name)(images, ["a red circle", "a blue square"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


# ----------------------------------------------------------------------------- RL on the mini world


def mini_run_config(tmp_path, *overrides):
    from parrot_t2i.config import load_config

    held_out = tmp_path / "held_out.txt"
    held_out.write_text("a red circle on a black background\na blue square on a white background\n")
    return load_config(
        None,
        [
            f"train.output_dir={tmp_path / 'run'}",
            "train.num_iterations=2",
            "sample.prompts_per_iteration=2",
            "sample.images_per_prompt=4",
            "sample.num_inference_steps=4",
            f"eval.file={held_out}",
            "eval.images_per_prompt=2",
            *overrides,
        ],
    )


def test_short_seeded_joint_rl_run_on_the_mini_world(tmp_path):
    import json

    from parrot_t2i.pen import PromptExpander
    from parrot_t2i.runs import open_run, run_expander, run_policy
    from parrot_t2i.trainer import train

    base = T2IPolicy.from_pretrained("builtin:mini").unet.state_dict()
    run_dir = train(mini_run_config(tmp_path))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    names = ["mini_aesthetic", "mini_preference", "mini_alignment", "mini_sentiment"]
    for m in metrics:
        assert all(0 <= m[f"reward/{n}/mean"] <= 1 for n in names) and 1 <= m["selected"] <= 8
    summary = json.loads((run_dir / "summary.json").read_text())
    checked = ["checker/shape", "checker/colour", "checker/background"]  # the independent judge, mini runs only
    assert list(summary["before"]) == [*names, "average", "hv_per_prompt", *checked] and summary["eval_images"] == 4
    assert all(summary[when][c] * 4 in (0, 1, 2, 3, 4) for when in ("before", "after") for c in checked)
    assert "checker/*: how often the attribute checker" in (run_dir / "summary.md").read_text()
    # Same seed, same everything: the first iteration's rewards repeat exactly.
    again = train(mini_run_config(tmp_path, "train.num_iterations=1", "eval.file=null"))
    first = json.loads((again / "metrics.jsonl").read_text().splitlines()[0])
    assert all(first[f"reward/{n}/mean"] == metrics[0][f"reward/{n}/mean"] for n in names)
    assert all(m["pen/expansion_tokens"] > 10 and "pen/loss" in m and "loss" in m for m in metrics)
    # Both networks moved: the T2I model's cross-attention layers (the default trainable set) only,
    # and the PEN's LoRA adapters, which change what it writes for the same seed.
    config, checkpoint = open_run(run_dir)
    trained = run_policy(config, checkpoint).unet.state_dict()
    changed = {name for name in base if not torch.equal(base[name], trained[name])}
    assert changed and all(".attn2." in name for name in changed)
    assert (checkpoint / "pen" / "adapter_model.safetensors").is_file()
    pen, sft = run_expander(config, checkpoint), PromptExpander.from_pretrained("builtin:mini")
    prompts = ["a red circle", "a blue square"] * 4
    original = sft.sample(prompts, seed=3)
    assert not torch.allclose(pen.token_log_probs(original), sft.token_log_probs(original))
