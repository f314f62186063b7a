"""Is the mini flow model's weak shape drawing the sampler's fault or the model's? (issue 15)

    python benchmarks/flow_shape.py                                   # the shipped model
    python benchmarks/flow_shape.py --model DIR --name p2             # a retrained one, e.g. --patch-size 2

`builtin:mini-flow` draws the prompt's shape in about 0.39 of held-out images (the mini UNet:
0.975). If that came from the sampler, more Euler steps or another CFG scale would lift it, and
the flow model could become the default job without retraining. Each row draws the 30 held-out
prompts × 4 images from the same noise with the plain prompt (no PEN, no identifiers, plain CFG,
deterministic Euler), read by the attribute checker and scored by the four rewards. Prints the
table and writes benchmarks/results/flow_shape.json, or flow_shape_NAME.json (~1.5 min on 2 cores at
patch 4), and beside it a grid (.png) of "a large red SHAPE on a black background", one row per
shape drawn from the same four noises: a model that ignores the shape word draws one row four times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.config import load_config
from parrot_t2i.evaluate import Inference, evaluate, infer, inference_from_config
from parrot_t2i.images import save_grid
from parrot_t2i.mini.world import SHAPES
from parrot_t2i.policies import Policy, load_policy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.run_folder import CHECKED, checker_accuracy

SETTINGS = [(5.0, 20), (5.0, 50), (2.0, 20), (8.0, 20)]  # (CFG scale, Euler steps); the first is the preset's
GRID_PROMPT = "a large red {} on a black background"


def shape_grid(policy: Policy, inference: Inference, path: Path) -> None:
    """One row per shape, each from the same four noises (one seed per row)."""
    rows = [infer(policy, [GRID_PROMPT.format(shape)] * 4, inference)[0] for shape in SHAPES]
    save_grid(torch.cat(rows), path, ncols=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:mini-flow", help="a mini flow model: builtin:mini-flow or a folder")
    parser.add_argument("--name", help="results file suffix (flow_shape_NAME.json); needed with --model")
    args = parser.parse_args()
    if (args.model == "builtin:mini-flow") != (args.name is None):
        parser.error("--name goes with --model (and names its results file)")
    started = time.perf_counter()
    config = load_config("mini-flow", [f"model.pretrained={args.model}"])
    policy = load_policy(args.model, config.model)
    plain = replace(
        inference_from_config(config, None, trained_identifiers=False),
        expander=None,
        identifiers=[],
        original_guidance=False,
        guidance_rescale=0.0,
        seed=1234,
    )
    names = [spec.name for spec in config.rewards]
    rewards = build_rewards(config.rewards)
    prompts = read_prompt_file("builtin:mini-heldout", "held-out prompts")
    rows = []
    for scale, steps in SETTINGS:
        inference = replace(plain, guidance_scale=scale, num_inference_steps=steps)
        result = evaluate(
            policy,
            rewards,
            names,
            prompts,
            images_per_prompt=4,
            inference=inference,
            batch_size=40,
            desc=f"CFG {scale}, {steps} steps",
        )
        accuracy = {k.removeprefix("checker/"): v for k, v in checker_accuracy(config, result).items()}
        rows.append({"cfg": scale, "steps": steps, **accuracy, **result.means()})
    columns = [*CHECKED, *names, "average"]
    print("\n| CFG | Euler steps | " + " | ".join(columns) + " |\n|---:|---:|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row['cfg']:g} | {row['steps']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    out = Path(__file__).parent / "results" / (f"flow_shape_{args.name}.json" if args.name else "flow_shape.json")
    scale, steps = SETTINGS[0]
    shape_grid(policy, replace(plain, guidance_scale=scale, num_inference_steps=steps), out.with_suffix(".png"))
    out.write_text(
        json.dumps(
            {
                "code_version": code_version(),
                "model": args.model,
                "patch_size": policy.transformer.config.patch_size,
                "prompts": "builtin:mini-heldout × 4 images, noise seed 1234, plain prompt and CFG",
                "rows": rows,
                "wall_time_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
