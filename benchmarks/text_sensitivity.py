"""At which noise levels does a mini-world model read the shape word? Flow model against the UNet (issue 15)

    python benchmarks/text_sensitivity.py                          # the shipped flow model
    python benchmarks/text_sensitivity.py --model DIR --name NAME  # a retrained one

The mini flow model draws the prompt's shape in about 0.3 of images, the mini UNet in 0.97
(benchmarks/flow_shape.py). This asks where in the noise range the difference lies: 96 rendered
"large" scenes are noised to each level from the same noise, and each model predicts x₀ from the
true caption ("a large red circle on a black background") and from the caption with the shape (or,
for reference, the colour) swapped. `gain` is how much the true word lowers the x₀ error: what the
model has learnt to take from that word at that noise level. The UNet's DDPM timesteps are matched
to the flow's σ by their noise-to-signal ratio (σ/(1 − σ) = √((1 − ᾱ)/ᾱ)).

A second table draws "a large COLOUR SHAPE on a black background" (4 shapes × 3 colours × 4 images,
plain prompt and CFG, noise seed 7 for both models) with no position, "at the center" and "at the
left", read by the attribute checker: if the flow model missed shapes because it cannot find where
the object is, naming the position would lift it. Prints both tables and writes
benchmarks/results/text_sensitivity.json (or _NAME.json); about 2 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import Tensor

from parrot_t2i.config import Config, load_config
from parrot_t2i.diffusion import unet_denoiser
from parrot_t2i.evaluate import evaluate, inference_from_config
from parrot_t2i.mini.train_flow import flow_matching_targets
from parrot_t2i.mini.world import COLOURS, SHAPES, caption, random_scene, render
from parrot_t2i.policies import Policy, load_policy
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.run_folder import checker_accuracy

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
NAMED = {"size", "colour", "shape", "background"}  # flow_shape.py's grid prompt names these
SWAPS = {"shape": SHAPES, "colour": tuple(COLOURS)}
POSITIONS = {"none": "", "center": " at the center", "left": " at the left"}
PROBE = "a large {colour} {shape}{position} on a black background"
PROBE_COLOURS = ("red", "green", "yellow")


def captions(n: int, seed: int = 0) -> tuple[Tensor, dict[str, list[str]]]:
    """``n`` rendered large scenes in [−1, 1] and their captions: true, shape swapped, colour swapped."""
    rng = random.Random(seed)
    scenes = [random_scene(rng, size="large") for _ in range(n)]
    texts = {"true": [caption(s, NAMED) for s in scenes]}
    for attribute, values in SWAPS.items():
        texts[attribute] = [
            caption(replace(s, **{attribute: rng.choice([v for v in values if v != getattr(s, attribute)])}), NAMED)
            for s in scenes
        ]
    images = render(scenes, torch.Generator().manual_seed(seed)) * 2 - 1
    return images, texts


def flow_x0(policy: Policy, texts: dict[str, list[str]]):
    """x̂₀(x_σ, σ, caption) of a pixel flow model: x_σ − σ·v̂ on the path x_σ = (1 − σ)·x₀ + σ·ε."""
    conds = {k: policy.encode(v) for k, v in texts.items()}

    def predict(x0: Tensor, noise: Tensor, sigma: float, key: str) -> Tensor:
        noisy, _ = flow_matching_targets(x0, noise, torch.full((len(x0),), sigma))
        return noisy - sigma * policy.denoise(noisy, torch.full((len(x0),), sigma * 1000), conds[key])

    return predict


def unet_x0(policy: Policy, texts: dict[str, list[str]]):
    """x̂₀ of the v-prediction mini UNet at the DDPM timestep whose noise-to-signal ratio is σ's."""
    scheduler = policy.scheduler
    if scheduler.config.prediction_type != "v_prediction":
        raise SystemExit(f"expected a v-prediction UNet, the model predicts {scheduler.config.prediction_type}")
    denoise, conds = unet_denoiser(policy.unet), {k: policy.encode(v) for k, v in texts.items()}

    def predict(x0: Tensor, noise: Tensor, sigma: float, key: str) -> Tensor:
        target = (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)
        t = (scheduler.alphas_cumprod - target).abs().argmin().expand(len(x0))
        a = scheduler.alphas_cumprod[t[0]]
        noisy = scheduler.add_noise(x0, noise, t)
        return a.sqrt() * noisy - (1 - a).sqrt() * denoise(noisy, t, conds[key])

    return predict


@torch.no_grad()
def sensitivity(predict, images: Tensor, noise: Tensor) -> list[dict[str, float]]:
    rows = []
    for sigma in SIGMAS:
        error = {k: float(((predict(images, noise, sigma, k) - images) ** 2).mean()) for k in ("true", *SWAPS)}
        rows.append({"sigma": sigma, "x0_mse": error["true"], **{f"gain_{a}": error[a] - error["true"] for a in SWAPS}})
    return rows


def position_probe(config: Config, policy: Policy) -> dict[str, dict[str, float]]:
    """The checker's shape and colour accuracy with the position unnamed and named (plain prompt, CFG)."""
    plain = replace(
        inference_from_config(config, None, trained_identifiers=False),
        identifiers=[],
        original_guidance=False,
        guidance_rescale=0.0,
        seed=7,
    )
    rewards, names = build_rewards(config.rewards), [spec.name for spec in config.rewards]
    rows = {}
    for key, position in POSITIONS.items():
        prompts = [PROBE.format(colour=c, shape=s, position=position) for s in SHAPES for c in PROBE_COLOURS]
        result = evaluate(policy, rewards, names, prompts, images_per_prompt=4, inference=plain, desc=key)
        accuracy = checker_accuracy(config, result)
        rows[key] = {a: accuracy[f"checker/{a}"] for a in ("shape", "colour")}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:mini-flow", help="a mini flow model: builtin:mini-flow or a folder")
    parser.add_argument("--name", help="results file suffix (text_sensitivity_NAME.json); needed with --model")
    parser.add_argument("--images", type=int, default=96, help="rendered scenes for the x₀ table")
    args = parser.parse_args()
    if (args.model == "builtin:mini-flow") != (args.name is None):
        parser.error("--name goes with --model (and names its results file)")
    started = time.perf_counter()
    images, texts = captions(args.images)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    configs = {
        "flow": load_config("mini-flow", [f"model.pretrained={args.model}"]),
        "unet": load_config("mini", ["model.pretrained=builtin:mini"]),
    }
    policies = {name: load_policy(config.model.pretrained, config.model) for name, config in configs.items()}
    predictors = {"flow": flow_x0(policies["flow"], texts), "unet": unet_x0(policies["unet"], texts)}
    results = {name: sensitivity(predict, images, noise) for name, predict in predictors.items()}
    columns = ["flow x₀ MSE", "UNet x₀ MSE", *(f"{m} gain, {a}" for a in SWAPS for m in ("flow", "UNet"))]
    print("\n| σ | " + " | ".join(columns) + " |\n|---:|" + "---:|" * len(columns))
    for f, u in zip(results["flow"], results["unet"], strict=True):
        cells = [f["x0_mse"], u["x0_mse"], f["gain_shape"], u["gain_shape"], f["gain_colour"], u["gain_colour"]]
        print(f"| {f['sigma']:g} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    probes = {name: position_probe(configs[name], policy) for name, policy in policies.items()}
    header = " | ".join(f"shape, position {k}" for k in POSITIONS)
    print(f"\n| model | {header} |\n|---|" + "---:|" * len(POSITIONS))
    for model, rows in probes.items():
        print(f"| {model} | " + " | ".join(f"{rows[k]['shape']:.3f}" for k in POSITIONS) + " |")
    name = f"text_sensitivity_{args.name}.json" if args.name else "text_sensitivity.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(
        json.dumps(
            {
                "code_version": code_version(),
                "model": args.model,
                "images": f"{args.images} rendered large scenes, scene seed 0, noise seed 1",
                "x0_gain": results,
                "position_probe": {
                    "prompts": f"{PROBE}: 4 shapes × {'/'.join(PROBE_COLOURS)} × 4 images, noise seed 7, plain CFG",
                    **probes,
                },
                "wall_time_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
