"""Do reward identifiers steer, and does original-prompt-centred guidance keep alignment? (issue 4)

    python benchmarks/parrot_inference.py --run runs/parrot     # a finished default `parrot train`
    python benchmarks/parrot_inference.py                       # trains the default job first (~10 min)

On the held-out mini-world prompts, from the same noise and the same PEN expansions throughout:

1. Identifier steering, with the run's own inference (expansion + Eq. 5 with its eval.w1/w2): all
   identifiers (the paper's inference) vs only "<reward k>" for each k vs none. Claim: conditioning
   on <reward k> alone raises reward k relative to all identifiers. Also measured: whether the rise
   is specific to k (reward k under <reward k> vs under the other single identifiers).
2. Guidance, all identifiers: Eq. 5 vs expansion-only classifier-free guidance of the same total
   strength (w1 = w2 = 2.5 vs w = 5, the mini default; w1 = w2 = 5 vs w = 10, the paper's
   weights), and the prompt without expansion. Claim: original-prompt-centred guidance raises
   alignment to the *original* prompt.

Differences are paired (same noise, same expansion); ± is one standard error of the paired mean.
Prints both tables and writes benchmarks/results/parrot_inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.evaluate import evaluate, inference_from_config
from parrot_t2i.identifiers import identifier_strings
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.rewards import build_rewards
from parrot_t2i.runs import open_run, run_expander, run_policy


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a − b and its standard error."""
    diff = (a - b).double()
    return float(diff.mean()), float(diff.std(unbiased=True) / len(diff) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run folder (default: train the default job into runs/bench-parrot)")
    parser.add_argument("--images-per-prompt", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "parrot_inference.json"))
    args = parser.parse_args()

    run_dir, train_seconds = args.run, None
    if run_dir is None:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "parrot_t2i.cli", "train", "--output-dir", "runs/bench-parrot"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        train_seconds = time.perf_counter() - started
        run_dir = next(
            line.removeprefix("run folder: ") for line in out.splitlines() if line.startswith("run folder: ")
        )
    config, checkpoint = open_run(run_dir)
    policy, expander = run_policy(config, checkpoint), run_expander(config, checkpoint)
    names = [spec.name for spec in config.rewards]
    rewards = build_rewards(config.rewards)
    prompts = read_prompt_file(config.eval.file or "builtin:mini-heldout", "eval.file")
    strings = identifier_strings(len(names), config.prompts.identifier_template, config.prompts.identifier_strings)
    default = replace(inference_from_config(config, expander), identifiers=strings, original_guidance=True)
    n = args.images_per_prompt

    def run(label: str, inference) -> torch.Tensor:
        return evaluate(
            policy, rewards, names, prompts, images_per_prompt=n, inference=inference, batch_size=32, desc=label
        ).scores

    started = time.perf_counter()
    print(f"run: {checkpoint}\n{len(prompts)} held-out prompts × {n} images, same noise and expansions in every row\n")

    # 1. identifier steering
    settings = {
        "all": strings,
        **{f"<reward {k}> only": [strings[k - 1]] for k in range(1, len(names) + 1)},
        "none": [],
    }
    steering = {label: run(label, replace(default, identifiers=ids)) for label, ids in settings.items()}
    print(f"1. identifiers at inference (expansion + Eq. 5 guidance, w1 = {default.w1:g}, w2 = {default.w2:g})")
    print("| identifiers | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for label, scores in steering.items():
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in scores.mean(0).tolist()) + " |")
    gains = {}
    for k, name in enumerate(names):
        own = steering[f"<reward {k + 1}> only"][:, k]
        others = torch.stack([steering[f"<reward {j + 1}> only"][:, k] for j in range(len(names)) if j != k]).mean(0)
        mean, se = paired(own, steering["all"][:, k])
        specific, specific_se = paired(own, others)
        gains[name] = {
            "gain": mean,
            "standard_error": se,
            "raised": mean > 0,
            "over_other_single_identifiers": specific,
            "over_other_standard_error": specific_se,
        }
    print(
        "\nreward k with <reward k> only, minus with all identifiers / minus with another single identifier (paired):"
    )
    for name, g in gains.items():
        print(
            f"   {name:>16}: {g['gain']:+.4f} ± {g['standard_error']:.4f} "
            f"({'raised' if g['raised'] else 'NOT raised'})"
            f" | specific to k: {g['over_other_single_identifiers']:+.4f} ± {g['over_other_standard_error']:.4f}"
        )

    # 2. guidance
    align = names.index("mini_alignment") if "mini_alignment" in names else None

    def eq5(w: float):
        return replace(default, w1=w, w2=w)

    def cfg(w: float, **changes):
        return replace(default, original_guidance=False, guidance_scale=w, **changes)

    variants = {
        "Eq. 5, w1 = w2 = 2.5": eq5(2.5),
        "expansion only, CFG w = 5": cfg(5.0),
        "Eq. 5, w1 = w2 = 5 (paper)": eq5(5.0),
        "expansion only, CFG w = 10": cfg(10.0),
        "no expansion, CFG w = 5": cfg(5.0, expander=None),
    }
    reuse = "all" if (default.w1, default.w2) == (2.5, 2.5) else None  # the steering table's first row
    guidance = {
        label: steering[reuse] if reuse and label == "Eq. 5, w1 = w2 = 2.5" else run(label, inference)
        for label, inference in variants.items()
    }
    print("\n2. guidance (all identifiers)")
    print("| guidance | " + " | ".join(names) + " | average |\n|---|" + "---:|" * (len(names) + 1))
    for label, scores in guidance.items():
        means = scores.mean(0).tolist()
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in means) + f" | {sum(means) / len(means):.4f} |")
    alignment_gain = {}
    if align is not None:
        print("\nalignment to the original prompt, Eq. 5 minus expansion-only CFG of the same total strength (paired):")
        for ours, theirs in [
            ("Eq. 5, w1 = w2 = 2.5", "expansion only, CFG w = 5"),
            ("Eq. 5, w1 = w2 = 5 (paper)", "expansion only, CFG w = 10"),
        ]:
            mean, se = paired(guidance[ours][:, align], guidance[theirs][:, align])
            alignment_gain[f"{ours} vs {theirs}"] = {"gain": mean, "standard_error": se, "raised": mean > 0}
            print(f"   {ours} vs {theirs}: {mean:+.4f} ± {se:.4f}")

    result = {
        "run": str(checkpoint),
        "prompts": len(prompts),
        "images_per_prompt": n,
        "rewards": names,
        "identifier_means": {label: dict(zip(names, s.mean(0).tolist())) for label, s in steering.items()},
        "identifier_gain_over_all": gains,
        "guidance_means": {label: dict(zip(names, s.mean(0).tolist())) for label, s in guidance.items()},
        "alignment_gain_of_eq5_over": alignment_gain,
        "measure_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(train_seconds, 1) if train_seconds else None,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out} ({result['measure_seconds']:.0f} s of measurement)")


if __name__ == "__main__":
    main()
