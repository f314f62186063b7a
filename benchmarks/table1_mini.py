"""The paper's Table 1 and Fig. 4, rerun on the mini world with one budget and several seeds.

    python benchmarks/table1_mini.py                          # 50 iterations per training, seeds 0 and 1
    python benchmarks/table1_mini.py --iterations 2 --seeds 0 --images-per-prompt 1   # a smoke run

Every trained row starts from the shipped mini T2I model and PEN, runs the same number of
iterations (the decoupled ablation is two runs of that many, one per network), and is evaluated on the 30
held-out prompts from the same noise. Rows (paper's Table 1):

| row | training | inference |
|---|---|---|
| base model | none | prompt as given, CFG 5 |
| weighted sum 0.25 each (DPOK-style) | T2I only, Σ 0.25·r_k, no identifiers | prompt as given, CFG 5 |
| T2I tuning only | T2I only, Pareto + identifiers, no PEN | all identifiers, CFG 5 |
| PEN only (Promptist-style) | PEN only, Pareto, no identifiers | expansion, CFG 5 |
| preference reward only | T2I only, r = preference | prompt as given, CFG 5 |
| w/o joint optimisation (decoupled) | a T2I-only run and a PEN-only run, combined | Parrot's |
| w/o prompt expansion at inference | Parrot | all identifiers, prompt as given, CFG 5 |
| w/o original-prompt guidance | Parrot | expansion + identifiers, CFG 5 |
| Parrot | Parrot (the default job) | expansion + identifiers + Eq. 5 |

Also Fig. 4: training-batch reward curves of weighted sums {0.7, 0.1, 0.1, 0.1} and equal vs Parrot.
Prints the table (mean ± spread over seeds, each reward, average, hypervolume of all images against
the origin), writes benchmarks/results/table1_mini.json and table1_mini_curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.config import load_config
from parrot_t2i.evaluate import evaluate, inference_from_config
from parrot_t2i.pareto import hypervolume
from parrot_t2i.plots import reward_curves, save
from parrot_t2i.policies.unet import T2IPolicy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.rewards import build_rewards
from parrot_t2i.runs import open_combined, open_run, run_expander, run_policy
from parrot_t2i.trainer import train

RESULTS = Path(__file__).parent / "results"
T2I_ONLY = ["pen.pretrained=null", "train.pen=false"]
# Scalarisation baselines train on every sample, pinned here rather than left to the default rule
# ("the Pareto filter for parrot only"), so a change of that default cannot change these rows.
NO_FILTER = "objective.pareto_filter=false"
TRAININGS = {
    "weighted_sum": [
        "objective.name=weighted_sum",
        "objective.weights=[0.25, 0.25, 0.25, 0.25]",
        NO_FILTER,
        "prompts.identifiers=false",
        *T2I_ONLY,
    ],
    "weighted_sum_0.7": [
        "objective.name=weighted_sum",
        "objective.weights=[0.7, 0.1, 0.1, 0.1]",
        NO_FILTER,
        "prompts.identifiers=false",
        *T2I_ONLY,
    ],
    "t2i_only": T2I_ONLY,
    "pen_only": ["train.t2i=false", "prompts.identifiers=false"],
    "preference_only": [
        "objective.name=single",
        "objective.reward=mini_preference",
        NO_FILTER,
        "prompts.identifiers=false",
        *T2I_ONLY,
    ],
    "decoupled_t2i": ["train.pen=false"],  # the decoupled ablation: the T2I model with the SFT PEN ...
    "decoupled_pen": ["train.t2i=false"],  # ... and the PEN against the base model, combined at load time
    "parrot": [],
}
PLAIN = {"expander": None, "identifiers": [], "original_guidance": False}  # the prompt as given, CFG 5
ROWS = [  # (row, training: a key of TRAININGS, two keys combined (T2I, PEN) or None, changes to the inference)
    ("base model", None, PLAIN),
    ("weighted sum (0.25 each)", "weighted_sum", PLAIN),
    ("T2I tuning only", "t2i_only", {"expander": None, "original_guidance": False}),
    ("PEN only (Promptist-style)", "pen_only", {"original_guidance": False}),
    ("preference reward only", "preference_only", PLAIN),
    ("w/o joint optimisation (decoupled)", ("decoupled_t2i", "decoupled_pen"), {}),
    ("w/o prompt expansion at inference", "parrot", {"expander": None, "original_guidance": False}),
    ("w/o original-prompt guidance", "parrot", {"original_guidance": False}),
    ("Parrot", "parrot", {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--work-dir", default="runs/table1")
    parser.add_argument("--out", default=str(RESULTS / "table1_mini.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    prompts = read_prompt_file("builtin:mini-heldout", "held-out prompts")
    base_config = load_config(None)
    names = [spec.name for spec in base_config.rewards]
    rewards = build_rewards(base_config.rewards)
    table: dict[str, list[dict]] = {row: [] for row, _, _ in ROWS}
    curves: dict[str, list[list[float]]] = {}
    train_seconds = {}
    for seed in args.seeds:
        runs, runs_dirs = {}, {}
        for name, overrides in TRAININGS.items():
            out = Path(args.work_dir) / f"seed{seed}" / name
            if not (out / "summary.json").is_file():  # resumable: finished trainings are reused
                shutil.rmtree(out, ignore_errors=True)  # an interrupted one starts over
                begun = time.perf_counter()
                config = load_config(
                    None,
                    [
                        f"train.num_iterations={args.iterations}",
                        f"train.seed={seed}",
                        "eval.file=null",
                        "train.log_images_every=0",
                        f"train.output_dir={out}",
                        *overrides,
                    ],
                )
                out = train(config)
                train_seconds[f"seed{seed}/{name}"] = round(time.perf_counter() - begun, 1)
            runs[name], runs_dirs[name] = open_run(out), out
            history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            curves.setdefault(name, []).append(
                [sum(h[f"reward/{n}/mean"] for n in names) / len(names) for h in history]
            )
        for row, training, changes in ROWS:
            if training is None:
                policy, inference = (
                    T2IPolicy.from_pretrained(base_config.model.pretrained),
                    inference_from_config(base_config, None, trained_identifiers=False),
                )
            elif isinstance(training, tuple):  # two runs combined: the T2I model of one, the PEN of the other
                config, policy, expander = open_combined(*(runs_dirs[name] for name in training))
                inference = inference_from_config(config, expander)
            else:
                config, checkpoint = runs[training]
                policy, inference = (
                    run_policy(config, checkpoint),
                    inference_from_config(config, run_expander(config, checkpoint)),
                )
            inference = replace(inference, **changes, seed=1234 + seed)
            scores = evaluate(
                policy,
                rewards,
                names,
                prompts,
                images_per_prompt=args.images_per_prompt,
                inference=inference,
                batch_size=32,
                desc=f"seed {seed}: {row}",
            ).scores
            means = dict(zip(names, scores.mean(0).tolist()))
            means["average"] = sum(means.values()) / len(names)
            means["hypervolume"] = hypervolume(scores, torch.zeros(len(names)))  # all images pooled, against the origin
            table[row].append(means)

    columns = [*names, "average", "hypervolume"]
    summary = {}
    print(
        f"\n{len(prompts)} held-out prompts × {args.images_per_prompt} images; {args.iterations} iterations per "
        f"training; seeds {args.seeds}; mean ± half-range over seeds"
    )
    print("| row | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for row, values in table.items():
        summary[row] = {
            c: {
                "mean": sum(v[c] for v in values) / len(values),
                "spread": (max(v[c] for v in values) - min(v[c] for v in values)) / 2,
                "per_seed": [v[c] for v in values],
            }
            for c in columns
        }
        print(
            f"| {row} | "
            + " | ".join(f"{summary[row][c]['mean']:.4f} ± {summary[row][c]['spread']:.4f}" for c in columns)
            + " |"
        )
    figure = reward_curves(
        {
            label: [sum(ys) / len(ys) for ys in zip(*curves[key])]
            for label, key in [
                ("weighted sum 0.7/0.1/0.1/0.1", "weighted_sum_0.7"),
                ("weighted sum equal", "weighted_sum"),
                ("Parrot", "parrot"),
            ]
        },
        "Fig. 4 analogue: training-batch mean of the four rewards, averaged over seeds",
        overlay=True,
    )
    RESULTS.mkdir(exist_ok=True)
    save(figure, Path(args.out).with_name(Path(args.out).stem + "_curves.png"))
    result = {
        "budget": {
            "iterations": args.iterations,
            "images_per_iteration": base_config.sample.prompts_per_iteration * base_config.sample.images_per_prompt,
            "seeds": args.seeds,
        },
        "eval": {
            "prompts": len(prompts),
            "images_per_prompt": args.images_per_prompt,
            "hypervolume_reference": [0.0] * len(names),
        },
        "table": summary,
        "fig4_curves": {key: curves[key] for key in ("weighted_sum_0.7", "weighted_sum", "parrot")},
        "train_seconds": train_seconds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} ({result['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
