"""The prompt expansion network: sampling with log-probs and their recomputation."""

import torch

from parrot_t2i.mini.world import ATTRIBUTES, parse_prompt
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


def test_recomputed_log_probs_match_sampling_and_carry_gradients():
    pen = PromptExpander.from_pretrained("builtin:mini")
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
    from parrot_t2i.objectives import pen_policy_gradient_loss

    log_probs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # −(2·(−1 − 2) + 0·(−1.5)) = 6: padding and zero-weight samples contribute nothing
    assert pen_policy_gradient_loss(log_probs, mask, torch.tensor([2.0, 0.0])).item() == 6.0

    pen = PromptExpander.from_pretrained("builtin:mini")
    out = pen.sample(["a red circle", "a blue square"], seed=2)
    optimizer = torch.optim.SGD(pen.model.parameters(), lr=0.05)
    before = pen.token_log_probs(out).sum(1).detach()
    pen_policy_gradient_loss(pen.token_log_probs(out), out.mask, torch.tensor([1.0, 0.0])).backward()
    optimizer.step()
    after = pen.token_log_probs(out).sum(1).detach()
    assert after[0] > before[0]  # the positively weighted expansion became more likely
