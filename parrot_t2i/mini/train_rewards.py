"""Training of the mini world's learned judges: ``parrot mini train-rewards``.

- alignment: a dual encoder trained contrastively (symmetric InfoNCE, as CLIP) on rendered scenes
  and random partial captions of them, so that short prompts and full captions both score.
- preference: a Bradley–Terry model fitted to synthetic pairwise choices made by a stated rule
  (``PREFERENCE_RULE``), the way PickScore is fitted to Pick-a-Pic choices.
- checker: the attribute classifier used only for evaluation.

All data is rendered on the fly from a generator seeded by the step, so training is reproducible
and resumable (see ``fit``).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..fit import FitConfig, fit, step_generator
from .nets import AlignmentModel, AttributeChecker, PreferenceModel, write_model_card
from .tokenizer import build_tokenizer
from .world import ATTRIBUTES, Scene, caption, random_scene, render, training_caption

# The synthetic raters' utility: they like large, centred, sharp, plain, vivid shapes. Each pair
# (a, b) is labelled "a preferred" with probability σ(u(a) − u(b)), a Bradley–Terry choice.
PREFERENCE_RULE: dict[str, dict[str, float]] = {
    "size": {"large": 1.0},
    "position": {"center": 1.0},
    "focus": {"sharp": 0.8},
    "pattern": {"plain": 0.6},
    "saturation": {"vivid": 0.6},
}


CARDS = {
    "checker": "Reads all nine scene attributes from a 32×32 image (one head each). Evaluation only: never a reward.",
    "alignment": "CLIP-style dual encoder (CNN image tower, transformer text tower) trained with symmetric InfoNCE on "
    "rendered scenes and partial captions. Reward: cosine similarity.",
    "preference": "Bradley–Terry scorer fitted to synthetic pairwise choices (rule: PREFERENCE_RULE in "
    "parrot_t2i/mini/train_rewards.py). Reward: σ(s(x) − reference).",
}


def utility(scene: Scene) -> float:
    return sum(bonus.get(getattr(scene, attribute), 0.0) for attribute, bonus in PREFERENCE_RULE.items())


def _scenes(seed: int, step: int, n: int) -> tuple[list[Scene], torch.Generator, random.Random]:
    rng = random.Random(seed * 1_000_003 + step)
    return [random_scene(rng) for _ in range(n)], step_generator(seed, step), rng


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild pixel noise, so judges trained on clean renders also read imperfect generated images."""
    sigma = torch.rand(len(images), 1, 1, 1, generator=generator) * 0.06
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def train_checker(
    out: str | Path, work_dir: str | Path, steps: int = 1000, batch_size: int = 128, seed: int = 1, resume: bool = True
) -> Path:
    torch.manual_seed(seed)
    model = AttributeChecker()

    def loss_fn(step: int):
        scenes, generator, _ = _scenes(seed, step, batch_size)
        logits = model(augment(render(scenes, generator), generator))
        labels = [scene.labels() for scene in scenes]
        losses = {
            name: F.cross_entropy(logits[name], torch.tensor([lab[name] for lab in labels])) for name in ATTRIBUTES
        }
        return sum(losses.values()), {f"loss/{k}": v.item() for k, v in losses.items()}

    fit(
        model,
        loss_fn,
        FitConfig(steps=steps, learning_rate=2e-3, seed=seed),
        work_dir,
        desc="mini checker",
        resume=resume,
    )
    model.save_pretrained(out)
    write_model_card(out, "Mini-world attribute checker", CARDS["checker"], "parrot mini train-rewards")
    return Path(out)


def train_alignment(
    out: str | Path, work_dir: str | Path, steps: int = 2000, batch_size: int = 128, seed: int = 2, resume: bool = True
) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    model = AlignmentModel(len(tokenizer), tokenizer.model_max_length)

    def loss_fn(step: int):
        scenes, generator, rng = _scenes(seed, step, batch_size)
        images = augment(render(scenes, generator), generator)
        texts = [caption(s) if rng.random() < 0.3 else training_caption(s, rng, empty_rate=0.0) for s in scenes]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        logits = (
            model.logit_scale.exp().clamp(max=100)
            * model.embed_images(images)
            @ model.embed_text(tokens.input_ids, tokens.attention_mask).T
        )
        # Captions that fit several images of the batch ("a red circle") are positives for all of them.
        same = torch.tensor(
            [[texts[i] == texts[j] for j in range(len(texts))] for i in range(len(texts))], dtype=torch.float32
        )
        targets = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        return loss, {"logit_scale": model.logit_scale.exp().item()}

    fit(
        model,
        loss_fn,
        FitConfig(steps=steps, learning_rate=1e-3, seed=seed),
        work_dir,
        desc="mini alignment",
        resume=resume,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_model_card(out, "Mini-world alignment reward", CARDS["alignment"], "parrot mini train-rewards")
    return Path(out)


def train_preference(
    out: str | Path, work_dir: str | Path, steps: int = 1000, batch_size: int = 64, seed: int = 3, resume: bool = True
) -> Path:
    torch.manual_seed(seed)
    model = PreferenceModel()

    def loss_fn(step: int):
        scenes, generator, _ = _scenes(seed, step, 2 * batch_size)
        scores = model(augment(render(scenes, generator), generator))
        a, b = scores[:batch_size], scores[batch_size:]
        gap = torch.tensor([utility(x) - utility(y) for x, y in zip(scenes[:batch_size], scenes[batch_size:])])
        chosen = (torch.rand(batch_size, generator=generator) < torch.sigmoid(gap)).float()  # the rater's choice
        loss = F.binary_cross_entropy_with_logits(a - b, chosen)
        return loss, {"accuracy_vs_rule": ((a - b > 0) == (gap > 0)).float()[gap != 0].mean().item()}

    fit(
        model,
        loss_fn,
        FitConfig(steps=steps, learning_rate=1e-3, seed=seed),
        work_dir,
        desc="mini preference",
        resume=resume,
    )
    with torch.no_grad():
        scenes, generator, _ = _scenes(seed, -1, 2048)
        model.reference.fill_(model(render(scenes, generator)).mean())
    model.save_pretrained(out)
    write_model_card(out, "Mini-world preference reward", CARDS["preference"], "parrot mini train-rewards")
    return Path(out)
