"""Does Parrot's inference ever make images worse than a plain prompt? Calibrates eval.* (issue 15).

    python benchmarks/inference_defaults.py                       # the shipped mini model + mini PEN
    python benchmarks/inference_defaults.py --run runs/parrot     # a trained run (its PEN and identifiers)
    python benchmarks/inference_defaults.py --model DIR           # another mini-world model + the mini PEN

On the held-out mini-world prompts, from the same noise and the same PEN expansions in every row,
each inference setting is read by the attribute checker (shape / colour / background accuracy
against what the prompt names: prompt following, never a reward) and scored by the four rewards:

- "plain": what `parrot generate --no-expand --no-original-guidance --guidance-rescale 0` does (the
  prompt, with a run's identifiers, classifier-free guidance at the config's scale, no rescale);
- "defaults": what `parrot generate` does with no flags (the config's eval settings);
- a grid of Eq. 5 weights (w1, w2) with and without guidance rescale, and expansion-only CFG.

Prints the table and writes benchmarks/results/inference_defaults[_RUN or _MODEL].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.builtin import is_mini_world_model
from parrot_t2i.config import load_config
from parrot_t2i.evaluate import evaluate, inference_from_config
from parrot_t2i.pen import PromptExpander
from parrot_t2i.policies import load_policy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.run_folder import CHECKED, checker_accuracy
from parrot_t2i.runs import open_run, run_expander, run_policy

GRID = [  # (label, changes to the defaults' inference)
    ("Eq. 5, w1 = w2 = 2.5", {"w1": 2.5, "w2": 2.5, "guidance_rescale": 0.0}),
    ("Eq. 5, w1 = w2 = 2.5, rescale 0.7", {"w1": 2.5, "w2": 2.5, "guidance_rescale": 0.7}),
    ("Eq. 5, w1 = 4, w2 = 1", {"w1": 4.0, "w2": 1.0, "guidance_rescale": 0.0}),
    ("Eq. 5, w1 = 4, w2 = 1, rescale 0.7", {"w1": 4.0, "w2": 1.0, "guidance_rescale": 0.7}),
    ("Eq. 5, w1 = w2 = 5 (the paper's)", {"w1": 5.0, "w2": 5.0, "guidance_rescale": 0.0}),
    ("Eq. 5, w1 = w2 = 5, rescale 0.7", {"w1": 5.0, "w2": 5.0, "guidance_rescale": 0.7}),
    ("expansion only, CFG", {"original_guidance": False, "guidance_rescale": 0.0}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="a run folder (default: the shipped builtin:mini model and PEN)")
    source.add_argument("--model", help="a mini-world model without a run: builtin:mini-flow, a folder")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", help="results JSON (default: results/inference_defaults[_RUN or _MODEL].json)")
    args = parser.parse_args()
    if args.model and not is_mini_world_model(args.model):
        parser.error(f"--model {args.model!r} is not a mini-world model (the checker reads only the mini world)")
    started = time.perf_counter()
    if args.run:
        config, checkpoint = open_run(args.run)
        policy, expander = run_policy(config, checkpoint), run_expander(config, checkpoint)
        defaults = inference_from_config(config, expander)
    else:  # what `parrot generate [--model M]` does without --run
        config = load_config(None, [f"model.pretrained={args.model or 'builtin:mini'}"])
        policy = load_policy(config.model.pretrained, config.model)
        expander = PromptExpander.from_pretrained("builtin:mini")
        defaults = inference_from_config(config, expander, trained_identifiers=False)
    defaults = replace(defaults, seed=args.seed)
    names = [spec.name for spec in config.rewards]
    rewards = build_rewards(config.rewards)
    prompts = read_prompt_file("builtin:mini-heldout", "held-out prompts")
    settings = [
        (
            "plain (--no-expand --no-original-guidance)",
            replace(defaults, expander=None, original_guidance=False, guidance_rescale=0.0),
        ),
        (
            f"defaults (w1 {defaults.w1}, w2 {defaults.w2}, rescale {defaults.guidance_rescale}, expand "
            f"{defaults.expander is not None})",
            defaults,
        ),
        *[(label, replace(defaults, **changes)) for label, changes in GRID],
    ]
    rows = []
    for label, inference in settings:
        result = evaluate(
            policy,
            rewards,
            names,
            prompts,
            images_per_prompt=args.images_per_prompt,
            inference=inference,
            batch_size=40,
            desc=label,
        )
        accuracy = {k.removeprefix("checker/"): v for k, v in checker_accuracy(config, result).items()}
        rows.append({"setting": label, **accuracy, **result.means()})
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k != "setting"), flush=True)
    columns = [*CHECKED, *names, "average"]
    print("\n| setting | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row['setting']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    source = args.run or args.model
    suffix = "_" + Path(source.removeprefix("builtin:")).name if source else ""
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"inference_defaults{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "code_version": code_version(),
                "model": args.run or f"{args.model or 'builtin:mini'} + builtin:mini PEN",
                "prompts": len(prompts),
                "images_per_prompt": args.images_per_prompt,
                "seed": args.seed,
                "rows": rows,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
