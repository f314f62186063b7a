"""The prompt expansion network: sampling with log-probs and their recomputation."""

import pytest
import torch

from parrot_t2i.errors import ParrotError
from parrot_t2i.mini.world import ATTRIBUTES, parse_prompt
from parrot_t2i.objectives import pen_policy_gradient_loss
from parrot_t2i.pen import TEMPLATES, PromptExpander


def test_mini_pen_samples_faithful_expansions_with_log_probs():
    pen = PromptExpander.from_pretrained("builtin:mini")
    assert pen.template == TEMPLATES["mini"]
    prompts = ["a red circle", "a blue square on a black background", "a yellow cross"]
    out = pen.sample(prompts, seed=0)
    assert out.ids.shape == out.mask.shape == out.log_probs.shape and out.ids.shape[0] == 3
    assert (out.log_probs <= 0).all() and (out.log_probs[out.mask == 0] == 0).all()
    assert (out.mask.sum(1) >= 15).all()  # full captions, each ending with its end-of-sequence token
    last = out.mask.sum(1) - 1
    assert (out.ids[torch.arange(3), last] == pen.tokenizer.eos_token_id).all()
    for prompt, text in zip(prompts, out.texts):
        named = parse_prompt(text)
        assert parse_prompt(prompt).items() <= named.items() and len(named) == len(ATTRIBUTES), text
    again = pen.sample(prompts, seed=0)
    assert again.texts == out.texts and torch.equal(again.log_probs, out.log_probs)  # seeded


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_recomputed_log_probs_match_sampling_and_carry_gradients(mode):
    pen = PromptExpander.from_pretrained("builtin:mini")  # GPT-2 with dropout 0.1, which must stay off
    pen.set_trainable(mode, lora_rank=4)
    assert not any(m.training for m in pen.model.modules())
    prompts = ["a red circle", "a green triangle on a white background"]  # different lengths: left padding
    for temperature in (1.0, 0.7):
        out = pen.sample(prompts, seed=1, temperature=temperature, top_p=0.9)
        recomputed = pen.token_log_probs(out, temperature=temperature)
        assert out.mask.sum() > 20 and (out.log_probs[out.mask == 1] < 0).any()
        torch.testing.assert_close(recomputed, out.log_probs, atol=1e-5, rtol=1e-5)
    loss = -recomputed.sum()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pen.model.parameters())


def test_pen_loss_arithmetic_and_gradient_sign():
    log_probs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # −(2·(−1 − 2) + 0·(−1.5)) = 6: padding and zero-weight samples contribute nothing
    assert pen_policy_gradient_loss(log_probs, mask, torch.tensor([2.0, 0.0])).item() == 6.0

    pen = PromptExpander.from_pretrained("builtin:mini")
    optimizer = torch.optim.SGD(pen.set_trainable("full"), lr=0.05)
    out = pen.sample(["a red circle", "a blue square"], seed=2)
    before = pen.token_log_probs(out).sum(1).detach()
    pen_policy_gradient_loss(pen.token_log_probs(out), out.mask, torch.tensor([1.0, 0.0])).backward()
    optimizer.step()
    after = pen.token_log_probs(out).sum(1).detach()
    assert after[0] > before[0]  # the positively weighted expansion became more likely


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_trained_pen_saves_and_loads_back(tmp_path, mode):
    pen = PromptExpander.from_pretrained("builtin:mini")
    params = pen.set_trainable(mode, lora_rank=4)
    assert all(p.requires_grad for p in params) and (mode == "full") == (
        sum(p.numel() for p in params) == sum(p.numel() for p in pen.model.parameters())
    )
    out = pen.sample(["a red circle", "a blue square"], seed=4)
    optimizer = torch.optim.SGD(params, lr=0.5)
    pen_policy_gradient_loss(pen.token_log_probs(out), out.mask, torch.tensor([1.0, -1.0])).backward()
    optimizer.step()
    pen.save_trainable(tmp_path / "pen", mode)
    loaded = PromptExpander.from_pretrained("builtin:mini")
    untrained = loaded.token_log_probs(out)
    loaded.load_trainable(tmp_path / "pen", mode)
    with torch.no_grad():
        expected = pen.token_log_probs(out)
    torch.testing.assert_close(loaded.token_log_probs(out), expected)
    assert not torch.allclose(untrained, expected)


def test_kl_to_the_sft_pen_starts_at_zero_and_grows_with_training():
    pen = PromptExpander.from_pretrained("builtin:mini")
    params = pen.set_trainable("lora", lora_rank=4)
    out = pen.sample(["a red circle", "a purple cross on a beige background"], seed=6)
    kl = pen.kl_to_sft(out, pen.token_distributions(out))
    assert kl.shape == (2,) and torch.allclose(kl, torch.zeros(2), atol=1e-6)  # LoRA starts as the identity
    optimizer = torch.optim.SGD(params, lr=1.0)
    for _ in range(3):
        pen_policy_gradient_loss(pen.token_log_probs(out), out.mask, torch.tensor([1.0, 1.0])).backward()
        optimizer.step()
        optimizer.zero_grad()
    distributions = pen.token_distributions(out)
    kl = pen.kl_to_sft(out, distributions)
    assert (kl > 1e-3).all()
    kl.sum().backward()  # differentiable, and only through the adapters
    assert all(p.grad is not None for p in params)
    full = PromptExpander.from_pretrained("builtin:mini")
    full.set_trainable("full")
    with pytest.raises(ParrotError, match="needs pen.trainable=lora"):
        full.kl_to_sft(out, full.token_distributions(out))


def test_sft_batch_labels_only_the_expansion_and_eos():
    from parrot_t2i.pen_sft import sft_batch

    pen = PromptExpander.from_pretrained("builtin:mini")
    ids, mask, labels = sft_batch(
        pen, [("a red circle", "a small red circle"), ("a cross", "a large blue cross at the top")]
    )
    tok = pen.tokenizer
    for row, expansion in enumerate(["a small red circle", "a large blue cross at the top"]):
        target = labels[row][labels[row] != -100].tolist()
        assert target == tok(expansion, add_special_tokens=False).input_ids + [tok.eos_token_id]
        n = int(mask[row].sum())
        assert tok.decode(ids[row, :n]).startswith("<bos>") and (labels[row, n:] == -100).all()


def test_pickled_weights_are_refused(tmp_path):
    """Weights load only from safetensors: a PEN saved as pytorch_model.bin is a clear error."""
    from tiny_models import build_tiny_pen
    from transformers import AutoModelForCausalLM

    folder = build_tiny_pen(tmp_path / "pen")
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder, safe_serialization=False)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ParrotError, match="only from safetensors"):
        PromptExpander.from_pretrained(str(folder))


def test_a_prompt_longer_than_the_pen_takes_is_shortened_with_a_warning(caplog):
    pen = PromptExpander.from_pretrained("builtin:mini")  # 64 positions
    long = " ".join(["a red circle on a white background"] * 45)  # 315 words
    with caplog.at_level("WARNING"):
        out = pen.sample([long, "a blue square"], max_new_tokens=16, seed=0)
    assert "1 prompt(s) were too long for the PEN (64 positions, 16 of them for the expansion)" in caplog.text
    assert out.prompt_ids.shape[1] + out.ids.shape[1] <= 64 and out.texts[0]
    with pytest.raises(ParrotError, match="leaves no room for the prompt"):
        pen.sample(["a red circle"], max_new_tokens=64)


def test_sampling_leaves_the_callers_random_stream_alone(tmp_path):
    from tiny_models import build_tiny_clip

    pen = PromptExpander.from_pretrained("builtin:mini")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    pen.sample(["a red circle"], seed=0)
    build_tiny_clip(tmp_path / "clip")  # the tiny builders seed the global generator inside a fork
    assert torch.equal(torch.rand(3), expected)
