"""How good is the embedded mini world? Measures the issue-3 acceptance figures.

    python benchmarks/mini_world.py                 # everything, including a default `parrot train`
    python benchmarks/mini_world.py --skip-train    # models only (about 2 minutes)
    python benchmarks/mini_world.py --run runs/parrot   # read the train figures from an existing run

1. The attribute checker on fresh procedural images (its own accuracy, a sanity check).
2. Base-model prompt following on the held-out prompts, read by the checker (targets: shape ≥ 80%,
   colour ≥ 60%, background ≥ 70%), with the plain prompt and with all reward identifiers prefixed.
3. Alignment-reward caption retrieval: top-1 among 8 full captions on procedural images (≥ 90%).
4. The four rewards' correlations on base-model samples, and how many samples are non-dominated.
5. The default `parrot train` run: wall time and every reward before vs after on held-out prompts.

Prints a table per part and writes benchmarks/results/mini_world.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.config import load_config
from parrot_t2i.diffusion import CFG
from parrot_t2i.evaluate import generate, score
from parrot_t2i.identifiers import identifier_strings
from parrot_t2i.mini import weights_path
from parrot_t2i.mini.nets import AttributeChecker
from parrot_t2i.mini.world import (
    ATTRIBUTES,
    Scene,
    caption,
    random_scene,
    render,
    scene_dict,
)
from parrot_t2i.pareto import non_dominated
from parrot_t2i.policies.unet import T2IPolicy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.rewards import build_rewards

TARGETS = {"shape": 0.80, "colour": 0.60, "background": 0.70}
REWARDS = ["mini_aesthetic", "mini_preference", "mini_alignment", "mini_sentiment"]


def checker_accuracy(checker: AttributeChecker, n: int = 1024, seed: int = 99) -> dict[str, float]:
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    predicted = checker.predict(render(scenes, torch.Generator().manual_seed(seed)))
    return {name: sum(p == getattr(s, name) for p, s in zip(values, scenes)) / n for name, values in predicted.items()}


def prompt_following(
    policy: T2IPolicy, checker: AttributeChecker, prompts: list[str], per_prompt: int, prefix: str
) -> tuple[dict[str, float], torch.Tensor, list[str]]:
    originals = [p for p in prompts for _ in range(per_prompt)]
    sample = load_config(None).sample  # the default job's guidance and steps
    images = generate(
        policy,
        [f"{prefix} {p}".strip() for p in originals],
        CFG(sample.guidance_scale),
        seed=0,
        num_inference_steps=sample.num_inference_steps,
    )
    hits = checker.prompt_hits(images, originals, tuple(TARGETS))
    return {name: sum(v) / len(v) for name, v in hits.items()}, images, originals


def one_change(scene: Scene, rng: random.Random) -> Scene:
    """The scene with one random attribute set to another value: a hard negative caption."""
    name = rng.choice(list(ATTRIBUTES))
    value = rng.choice([v for v in ATTRIBUTES[name] if v != getattr(scene, name)])
    return Scene(**{**scene_dict(scene), name: value})


def retrieval_top1(n: int = 512, candidates: int = 8, seed: int = 7, hard: bool = False) -> float:
    """Top-1 caption retrieval: distractors are random full captions, or (``hard``) captions of the
    same scene with one attribute changed."""
    alignment = build_rewards(["mini_alignment"])[0]
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = render(scenes, torch.Generator().manual_seed(seed))
    hits = 0
    for image, scene in zip(images, scenes):
        distractors = [one_change(scene, rng) if hard else random_scene(rng) for _ in range(candidates - 1)]
        texts = [caption(scene)] + [caption(d) for d in distractors]
        scores = alignment(image[None].expand(candidates, -1, -1, -1), texts)
        hits += int(scores.argmax()) == 0
    return hits / n


def correlations(scores: torch.Tensor) -> dict[str, dict[str, float]]:
    ranks = scores.argsort(0).argsort(0).float()  # Spearman = Pearson on ranks
    matrix = torch.corrcoef(ranks.T)
    return {a: {b: round(float(matrix[i, j]), 3) for j, b in enumerate(REWARDS)} for i, a in enumerate(REWARDS)}


def default_train_run(existing: str | None) -> dict:
    if existing:
        run_dir, wall = Path(existing), None
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="parrot-mini-bench-")) / "run"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "parrot_t2i.cli", "train", "--output-dir", str(run_dir)], check=True)
        wall = time.perf_counter() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "command_wall_time_s": wall, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-prompt", type=int, default=8)
    parser.add_argument("--skip-train", action="store_true", help="do not run the default `parrot train`")
    parser.add_argument("--run", help="take the train figures from this finished run folder instead of training")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mini_world.json"))
    args = parser.parse_args()
    torch.manual_seed(0)

    checker = AttributeChecker.from_pretrained(weights_path("checker")).eval()
    policy = T2IPolicy.from_pretrained("builtin:mini")
    held_out = read_prompt_file("builtin:mini-heldout", "held-out prompts")
    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        }
    }

    result["checker_accuracy_on_procedural_images"] = checker_accuracy(checker)
    print("1. attribute checker on 1024 fresh procedural images")
    for name, acc in result["checker_accuracy_on_procedural_images"].items():
        print(f"   {name:>10}: {acc:.3f}")

    print(
        f"2. base-model prompt following, {len(held_out)} held-out prompts × {args.images_per_prompt} images (checker)"
    )
    print(f"   {'conditioning':>22} | " + " | ".join(f"{n} (≥{t:.0%})" for n, t in TARGETS.items()))
    following = {}
    for label, prefix in [("plain prompt", ""), ("all identifiers", " ".join(identifier_strings(len(REWARDS))))]:
        accuracy, images, originals = prompt_following(policy, checker, held_out, args.images_per_prompt, prefix)
        following[label] = accuracy
        print(f"   {label:>22} | " + " | ".join(f"{accuracy[n]:>{len(n) + 7}.3f}" for n in TARGETS))
        if not prefix:
            base_images, base_prompts = images, originals
    result["prompt_following"] = following
    result["prompt_following_meets_targets"] = all(following["plain prompt"][n] >= t for n, t in TARGETS.items())

    result["alignment_retrieval_top1_among_8"] = retrieval_top1()
    result["alignment_retrieval_top1_among_8_one_attribute_changed"] = retrieval_top1(hard=True)
    print(
        "3. alignment reward, caption retrieval top-1 among 8 (≥ 0.90): "
        f"{result['alignment_retrieval_top1_among_8']:.3f}"
    )
    print(
        "   harder: the 7 distractors differ from the true caption in one attribute: "
        f"{result['alignment_retrieval_top1_among_8_one_attribute_changed']:.3f}"
    )

    scores = score(build_rewards(REWARDS), base_images, base_prompts)
    groups = torch.arange(len(base_prompts)) // args.images_per_prompt
    result["base_reward_means"] = {name: float(scores[:, k].mean()) for k, name in enumerate(REWARDS)}
    result["base_reward_spearman"] = correlations(scores)
    result["base_non_dominated_fraction_per_prompt_group"] = float(non_dominated(scores, groups).float().mean())
    print("4. rewards on base-model samples: means, and Spearman correlations")
    print("   " + " " * 16 + "".join(f"{n.removeprefix('mini_'):>12}" for n in REWARDS))
    for a in REWARDS:
        print(
            f"   {a.removeprefix('mini_'):>16}"
            + "".join(f"{result['base_reward_spearman'][a][b]:>12.3f}" for b in REWARDS)
        )
    print("   means: " + ", ".join(f"{n}={v:.3f}" for n, v in result["base_reward_means"].items()))
    print(
        f"   non-dominated within each prompt's {args.images_per_prompt} images: "
        f"{result['base_non_dominated_fraction_per_prompt_group']:.2f}"
    )

    if not args.skip_train or args.run:
        train = default_train_run(args.run)
        result["default_train"] = train
        print(
            f"5. default `parrot train`: {train['iterations']} iterations, wall time {train['wall_time_s'] / 60:.1f} "
            "min (inside the run)"
        )
        print("   | reward | before | after | change |")
        for name, before in train["before"].items():
            print(f"   | {name} | {before:.4f} | {train['after'][name]:.4f} | {train['after'][name] - before:+.4f} |")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
