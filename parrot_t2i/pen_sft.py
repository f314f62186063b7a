"""Supervised fine-tuning of a prompt expansion network on (prompt → expansion) pairs: ``parrot sft-pen``.

The PEN starts RL from a model that already expands prompts (paper §3.3: an instruction LM tuned
on prompt/expansion pairs; Promptist is tuned the same way). The loss is the expansion's negative
log-likelihood given the templated prompt, on the expansion tokens and the end-of-sequence token
only, so the model learns to continue, not to repeat the prompt.

Pairs come from a JSONL file (``{"prompt": ..., "expansion": ...}`` per line, Promptist-style data)
or, for the mini world, from its caption grammar (``builtin:mini``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .errors import ParrotError
from .fit import FitConfig, fit
from .pen import TEMPLATE_FILE, PromptExpander

Pairs = Callable[[random.Random, int], list[tuple[str, str]]]  # (rng, batch size) -> pairs


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, expansion) pairs of a JSONL file; a malformed line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParrotError(f"--data {str(path)!r} does not exist")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["prompt"]).strip(), str(row["expansion"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ParrotError(
                f'{path}:{number}: expected a JSON object with "prompt" and "expansion", got {line[:80]!r}'
            ) from None
    if not pairs:
        raise ParrotError(f"{path} holds no pairs")
    return pairs


def sample_from(pairs: list[tuple[str, str]]) -> Pairs:
    """A batch source drawing pairs uniformly (with replacement) from a fixed list."""
    return lambda rng, n: [pairs[rng.randrange(len(pairs))] for _ in range(n)]


def sft_batch(pen: PromptExpander, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (input_ids, attention_mask, labels) with labels only on expansion + EOS.

    Prompt and expansion are tokenised separately and concatenated, so the boundary is exact
    whatever the tokenizer merges across it.
    """
    tok = pen.tokenizer
    rows = []
    for prompt, expansion in pairs:
        context = pen.template.format(prompt=prompt)
        continuation = expansion if context[-1:].isspace() else " " + expansion
        head = tok(context, add_special_tokens=False).input_ids
        tail = tok(continuation, add_special_tokens=False).input_ids + [tok.eos_token_id]
        rows.append((head, tail))
    width = max(len(h) + len(t) for h, t in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (head, tail) in enumerate(rows):
        n = len(head) + len(tail)
        ids[i, :n] = torch.tensor(head + tail)
        mask[i, :n] = 1
        labels[i, len(head) : n] = torch.tensor(tail)
    return ids, mask, labels


def sft_pen(
    pen: PromptExpander,
    pairs: Pairs,
    out: str | Path,
    work_dir: str | Path,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int = 32,
    warmup_steps: int = 100,
    seed: int = 0,
    resume: bool = True,
) -> Path:
    """Fine-tune ``pen`` on batches from ``pairs``; write model, tokenizer and template to ``out``.

    Training is resumable: each batch is a function of (seed, step), and ``work_dir`` keeps a
    checkpoint every 500 steps.
    """
    model = pen.model.requires_grad_(True)

    def loss_fn(step: int):
        ids, mask, labels = sft_batch(pen, pairs(random.Random(seed * 1_000_003 + step), batch_size))
        device = model.device
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss, {}

    fit(
        model,
        loss_fn,
        FitConfig(steps=steps, learning_rate=learning_rate, warmup_steps=min(warmup_steps, steps), seed=seed),
        work_dir,
        desc="PEN SFT",
        resume=resume,
    )
    model.requires_grad_(False)
    out = Path(out)
    model.save_pretrained(out)
    pen.tokenizer.save_pretrained(out)
    (out / TEMPLATE_FILE).write_text(json.dumps({"template": pen.template}, indent=2))
    return out
