"""Learnt identifier embeddings (model.train_identifiers): substitution, training, saving, loading."""

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from parrot_t2i.checkpoint import save_checkpoint
from parrot_t2i.config import load_config
from parrot_t2i.identifiers import identifier_strings
from parrot_t2i.learned_identifiers import FILE
from parrot_t2i.policies.unet import T2IPolicy
from parrot_t2i.run import setup_run
from parrot_t2i.runs import run_policy
from parrot_t2i.trainer import train_iteration


def test_only_identifier_tokens_read_the_learnt_vectors():
    policy = T2IPolicy.from_pretrained("builtin:mini")
    prompts = ["<reward 1> a red circle", "<reward 2> a red circle", "a red circle"]
    before = policy.encode(prompts).embeds
    frozen = {n: p.clone() for n, p in policy.text_encoder.named_parameters()}
    [vectors] = policy.learn_identifiers(identifier_strings(4))
    assert vectors.shape == (4, policy.text_encoder.config.hidden_size) and vectors.requires_grad
    torch.testing.assert_close(policy.encode(prompts).embeds, before)  # they start as the tokens' own embeddings
    with torch.no_grad():  # not a constant shift: the encoder's layer norms would remove it
        vectors[1] += torch.randn(vectors.shape[1], generator=torch.Generator().manual_seed(0))
    after = policy.encode(prompts).embeds
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])  # "<reward 2>" alone moved
    assert (after[1] - before[1]).abs().max() > 0.1
    # Gradients reach the vectors through the frozen encoder, and the encoder's weights stay as they were.
    policy.encode(prompts[1:2], grad=True).embeds.sum().backward()
    assert vectors.grad[1].abs().sum() > 0 and vectors.grad[[0, 2, 3]].abs().sum() == 0
    assert all(torch.equal(p, frozen[n]) and p.grad is None for n, p in policy.text_encoder.named_parameters())


def test_identifiers_a_tokenizer_would_split_become_one_token(tiny_sd_model, tmp_path):
    policy = T2IPolicy.from_pretrained(str(tiny_sd_model))  # character-level CLIP tokenizer
    size = len(policy.tokenizer)
    assert len(policy.tokenizer("<reward 1>", add_special_tokens=False).input_ids) > 1
    [vectors] = policy.learn_identifiers(identifier_strings(2))
    assert len(policy.tokenizer) == size + 2 and policy.text_encoder.get_input_embeddings().weight.shape[0] == size + 2
    assert len(policy.tokenizer("<reward 1>", add_special_tokens=False).input_ids) == 1
    # Saved as {identifier: vector}: diffusers' textual-inversion loader takes each entry as it is.
    with torch.no_grad():
        vectors += torch.randn_like(vectors)
    policy.identifiers.save(tmp_path)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_model))
    pipe.load_textual_inversion([{k: v} for k, v in load_file(tmp_path / FILE).items()])
    table = pipe.text_encoder.get_input_embeddings().weight
    for k, name in enumerate(identifier_strings(2)):
        torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids(name)], vectors[k].detach())


def test_training_moves_the_vectors_and_a_run_reloads_them(tmp_path):
    config = load_config(
        "tiny",
        [
            f"train.output_dir={tmp_path}",
            "sample.num_inference_steps=3",
            "model.train_identifiers=true",
            "rewards=[brightness, colorfulness]",
            "eval.file=null",
        ],
    )
    run = setup_run(config, tmp_path)
    start = run.policy.identifiers.embeddings[0].detach().clone()
    train_iteration(run)
    moved = run.policy.identifiers.embeddings[0].detach()
    assert not torch.equal(start, moved)
    checkpoint = save_checkpoint(run, 1)
    saved = load_file(checkpoint / FILE)
    assert sorted(saved) == ["<reward 1>", "<reward 2>"]
    loaded = run_policy(config, checkpoint)
    prompts = ["<reward 2> a red circle", "a red circle"]
    torch.testing.assert_close(loaded.encode(prompts).embeds, run.policy.encode(prompts).embeds)


def test_sdxl_learns_a_vector_in_each_encoder_that_diffusers_loads(tiny_sdxl_model, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from parrot_t2i.learned_identifiers import embedding_file

    policy = T2IPolicy.from_pretrained(str(tiny_sdxl_model))
    first, second = policy.learn_identifiers(identifier_strings(2))
    assert first.shape[1] == policy.text_encoder.config.hidden_size
    assert second.shape[1] == policy.text_encoder_2.config.hidden_size
    with torch.no_grad():
        first += torch.randn_like(first)
        second += torch.randn_like(second)
    policy.identifiers.save(tmp_path)
    # Each file is {identifier: vector} for its encoder: the pipeline's loader takes it with that encoder.
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_model))
    for i, (encoder, tokenizer) in enumerate(
        [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]
    ):
        state = load_file(tmp_path / embedding_file(i))
        pipe.load_textual_inversion(list(state.values()), token=list(state), text_encoder=encoder, tokenizer=tokenizer)
        table = encoder.get_input_embeddings().weight
        for k, name in enumerate(identifier_strings(2)):
            torch.testing.assert_close(table[tokenizer.convert_tokens_to_ids(name)], (first, second)[i][k].detach())
    prompts = ["<reward 2> a red circle"]
    moved = policy.encode(prompts).embeds
    loaded = T2IPolicy.from_pretrained(str(tiny_sdxl_model))
    loaded.learn_identifiers(identifier_strings(2))
    loaded.identifiers.load(tmp_path)
    torch.testing.assert_close(loaded.encode(prompts).embeds, moved)
