"""Parrot's inference: identifiers, original-prompt-centred guidance in the sampler, expansion capping."""

import dataclasses
from dataclasses import replace

import pytest
import torch

from parrot_t2i.config import ConfigError, EvalConfig, load_config
from parrot_t2i.diffusion import CFG, Eq5, eq5_positive, original_prompt_guidance
from parrot_t2i.errors import ParrotError
from parrot_t2i.evaluate import (
    Inference,
    conditioned_prompts,
    generate,
    inference_from_config,
)
from parrot_t2i.identifiers import (
    identifier_strings,
    parse_identifiers,
    with_identifiers,
)
from parrot_t2i.mini.world import unsupported_words
from parrot_t2i.pen import PromptExpander
from parrot_t2i.policies.unet import T2IPolicy


def test_identifier_parsing():
    assert parse_identifiers("all", 4) == [1, 2, 3, 4]
    assert parse_identifiers("none", 4) == [] and parse_identifiers("", 4) == []
    assert parse_identifiers(" 3 , 1", 4) == [1, 3] and parse_identifiers("ALL", 2) == [1, 2]
    for bad, why in [("0", "1..4"), ("5", "1..4"), ("1,x", "1..4"), ("1,,2", "1..4"), ("2,2", "named twice")]:
        with pytest.raises(ParrotError, match=why):
            parse_identifiers(bad, 4)


def test_identifier_strings_and_prefixing():
    assert identifier_strings(3) == ["<reward 1>", "<reward 2>", "<reward 3>"]
    assert identifier_strings(2, "[r{k}]") == ["[r1]", "[r2]"]
    assert identifier_strings(2, explicit=["<aes>", "<pick>"]) == ["<aes>", "<pick>"]
    with pytest.raises(ParrotError, match="2 identifier strings given for 3 rewards"):
        identifier_strings(3, explicit=["<aes>", "<pick>"])
    strings = identifier_strings(4)
    assert with_identifiers("a red circle", [strings[2], strings[0]]) == "<reward 3> <reward 1> a red circle"
    assert with_identifiers("a red circle", []) == "a red circle"


def test_config_identifiers_and_inference_settings():
    config = load_config(None, ["eval.identifiers=2,4", "eval.w1=3", "eval.w2=1.5"])
    inference = inference_from_config(config, expander=None)
    assert inference.identifiers == ["<reward 2>", "<reward 4>"] and (inference.w1, inference.w2) == (3.0, 1.5)
    assert (
        inference_from_config(load_config(None, ["prompts.identifiers=false"]), None).identifiers == []
    )  # never trained with them
    assert inference_from_config(load_config(None, ["eval.identifiers=3"]), None).identifiers == ["<reward 3>"]
    assert inference_from_config(load_config(None, ["eval.identifiers=[1, 3]"]), None).identifiers == [
        "<reward 1>",
        "<reward 3>",
    ]
    with pytest.raises(ConfigError, match="eval.identifiers 7: expected 'all', 'none' or reward numbers 1..4"):
        load_config(None, ["eval.identifiers=7"])
    # Inference may run a longer chain than training (Flow-GRPO: 10 training steps, 40 at inference).
    assert inference.num_inference_steps == config.sample.num_inference_steps == 20
    longer = load_config(None, ["sample.num_inference_steps=10", "eval.num_inference_steps=40"])
    assert inference_from_config(longer, None).num_inference_steps == 40


@pytest.fixture(scope="module")
def mini_policy():
    return T2IPolicy.from_pretrained("builtin:mini")


def test_original_prompt_guidance_in_the_sampler_reduces_to_cfg(mini_policy):
    prompts = ["a red circle on a white background", "a blue square"]
    common = dict(seed=5, num_inference_steps=4)
    cfg5 = generate(mini_policy, prompts, CFG(5.0), **common)
    # ĉ = c with w1 + w2 = w is plain CFG with w (three batched branches vs two).
    torch.testing.assert_close(
        generate(mini_policy, prompts, Eq5(3.0, 2.0), originals=prompts, **common), cfg5, atol=1e-4, rtol=0
    )
    # w2 = 0 ignores the expansion: plain CFG on the original prompt with w1.
    other = ["a yellow cross on a black background", "a green triangle"]
    torch.testing.assert_close(
        generate(mini_policy, other, Eq5(5.0, 0.0), originals=prompts, **common), cfg5, atol=1e-4, rtol=0
    )
    # With weight on the expansion, the expansion changes the images.
    assert (generate(mini_policy, other, Eq5(5.0, 5.0), originals=prompts, **common) - cfg5).abs().max() > 0.05


def test_expansions_are_shortened_to_fit_the_t2i_text_encoder(mini_policy):
    pen = PromptExpander.from_pretrained("builtin:mini")
    prompts = ["a red circle", "a blue square on a black background"]
    full = pen.sample(prompts, seed=0)
    identifiers = identifier_strings(4)
    inference = replace(inference_from_config(load_config(None), pen), identifiers=identifiers, seed=0)
    expansions, conditioned = conditioned_prompts(mini_policy, prompts, inference)
    assert expansions == full.texts and conditioned == [
        " ".join(identifiers + [e]) for e in full.texts
    ]  # they fit: unchanged

    limit = 14  # as if the text encoder took 14 tokens: bos, the row's identifier, 11 of ĉ, eos
    count = lambda row, text: len(mini_policy.tokenizer(f"<reward {row + 1}> {text}").input_ids)
    short = pen.fit_to(full, lambda row, text: count(row, text) <= limit)
    for row, (text, whole) in enumerate(zip(short.texts, full.texts)):
        # the longest prefix that fits: PEN and T2I share the mini tokenizer, so it fills the limit exactly
        assert count(row, text) == limit < count(row, whole) and whole.startswith(text)
    kept = short.mask.sum(1)
    assert (kept < full.mask.sum(1)).all() and (short.log_probs[short.mask == 0] == 0).all()
    torch.testing.assert_close(short.log_probs, full.log_probs * short.mask)
    assert (short.ids[torch.arange(2), kept - 1] != pen.tokenizer.eos_token_id).all()  # the end was cut off


def test_inference_settings_have_one_source():
    # No field of Inference carries a default of its own: every setting comes from a config.
    assert all(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(Inference)
    )
    config = load_config(
        None, ["eval.w1=4", "eval.guidance_rescale=0.3", "sample.guidance_scale=6", "prompts.identifiers=true"]
    )
    inference = inference_from_config(config, None)
    assert (inference.w1, inference.w2, inference.guidance_rescale, inference.guidance_scale) == (
        4.0,
        EvalConfig().w2,
        0.3,
        6.0,
    )
    assert (
        len(inference.identifiers) == 4
        and inference_from_config(config, None, trained_identifiers=False).identifiers == []
    )


def test_guidance_rescale_matches_the_positive_branch_std(mini_policy):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    gen = torch.Generator().manual_seed(0)
    uncond, orig, expanded = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    guided = original_prompt_guidance(uncond, orig, expanded, 3.0, 1.0)
    positive = eq5_positive(orig, expanded, 3.0, 1.0)
    torch.testing.assert_close(positive, 0.75 * orig + 0.25 * expanded)
    full = rescale_noise_cfg(guided, positive, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), positive.std(dim=(1, 2, 3)))  # φ = 1: the positive's std
    # In the sampler: with ĉ = c, rescaled Eq. 5 is rescaled CFG; φ changes the images.
    prompts = ["a red circle on a white background"]
    common = dict(seed=5, num_inference_steps=4)
    cfg = generate(mini_policy, prompts, CFG(5.0, rescale=0.7), **common)
    torch.testing.assert_close(
        generate(mini_policy, prompts, Eq5(3.0, 2.0, rescale=0.7), originals=prompts, **common),
        cfg,
        atol=1e-4,
        rtol=0,
    )
    assert (cfg - generate(mini_policy, prompts, CFG(5.0), **common)).abs().max() > 0.01


def test_unsupported_words_of_the_mini_world():
    assert unsupported_words("a red circle on a blue background") == ["blue background"]
    assert unsupported_words("A Red circle on a dark blue background, striped") == []
    assert unsupported_words("a purple cat on a pink background") == ["cat", "pink background"]
