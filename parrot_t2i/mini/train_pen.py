"""Supervised fine-tuning of the mini prompt expansion network: ``parrot mini train-pen``.

A tiny transformers ``GPT2LMHeadModel`` learns p_φ(ĉ | c) on pairs (short prompt → full caption of
a scene that fits it) from the grammar, through the same ``sft_pen`` as ``parrot sft-pen``. Its
expansions keep what the user asked for and fill in everything else (size, position, styles), the
way Promptist-style models add detail. The loss is on the expansion tokens only.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from ..pen import TEMPLATES, PromptExpander
from ..pen_sft import sft_pen
from .nets import write_model_card
from .tokenizer import build_tokenizer
from .world import caption, random_scene, short_prompt

PEN_TEMPLATE = TEMPLATES["mini"]  # "<bos>{prompt} <sep>": the PEN's input; its continuation is the expansion
CARD = (
    "Tiny GPT-2 fine-tuned on (short prompt → full caption) pairs of the grammar. "
    f"Input: {PEN_TEMPLATE!r}; it continues with the expansion and <eos>."
)


def sft_pair(rng: random.Random) -> tuple[str, str]:
    """(short prompt, full caption): a random scene described both ways."""
    scene = random_scene(rng)
    return short_prompt(scene, with_background=rng.random() < 0.5), caption(scene)


def grammar_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """The SFT data of the mini PEN: ``n`` fresh pairs (``parrot sft-pen --data builtin:mini``)."""
    return [sft_pair(rng) for _ in range(n)]


def train_pen(
    out: str | Path, work_dir: str | Path, steps: int = 1500, batch_size: int = 64, seed: int = 4, resume: bool = True
) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=2 * tokenizer.model_max_length,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.generation_config = GenerationConfig(
        do_sample=True,
        max_new_tokens=24,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    pen = PromptExpander(model, tokenizer, PEN_TEMPLATE)
    sft_pen(
        pen,
        grammar_pairs,
        out,
        work_dir,
        steps=steps,
        learning_rate=2e-3,
        batch_size=batch_size,
        seed=seed,
        resume=resume,
    )
    write_model_card(out, "Mini-world prompt expansion network", CARD, "parrot mini train-pen")
    return Path(out)
