"""Time per RL iteration, split by phase, for packaged presets on this machine: the profile.

    python benchmarks/iteration_time.py                  # default job and the tiny preset
    python benchmarks/iteration_time.py --presets tiny --iterations 10
    python benchmarks/iteration_time.py --presets default --set objective.name=weighted_sum

Phases: PEN sampling (expand), T2I sampling, rewards, T2I update, PEN update, and logging
(metrics.jsonl, TensorBoard, image grids and checkpoints at the preset's intervals). Prints a
table of medians over the measured iterations (after warm-up; logging: the mean, since grids and
checkpoints are periodic) and writes benchmarks/results/iteration_time.json (``--out`` to keep
several).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.config import load_config
from parrot_t2i.run import setup_run
from parrot_t2i.run_folder import record_iteration
from parrot_t2i.tracking import start as start_trackers
from parrot_t2i.trainer import train_iteration

PHASES = ["expand", "sample", "reward", "update", "pen_update", "log", "iteration"]


def measure(preset: str | None, iterations: int, warmup: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(preset, [*overrides, f"train.output_dir={tmp}"])
        run = setup_run(config, Path(tmp))
        start_trackers(run.accelerator, config, Path(tmp))
        rows = []
        total = warmup + iterations
        for i in range(1, total + 1):
            result = train_iteration(run)
            started = time.perf_counter()
            record_iteration(run, result.stats, result.images, i, total)
            stats = result.stats
            stats["time/log"] = time.perf_counter() - started
            stats["time/iteration"] += stats["time/log"]
            if i > warmup:
                rows.append(stats)
        run.accelerator.end_training()
    return {
        "preset": preset or "default",
        "overrides": overrides,
        "images_per_iteration": config.sample.prompts_per_iteration * config.sample.images_per_prompt,
        "num_inference_steps": config.sample.num_inference_steps,
        "trainable": config.model.trainable,
        "iterations_measured": iterations,
        "median_selected_fraction": statistics.median(r["selected_fraction"] for r in rows),
        **{f"median_{k}_s": statistics.median(r.get(f"time/{k}", 0.0) for r in rows) for k in PHASES},
        # image grids and checkpoints are periodic: their cost per iteration is the mean, not the median
        "mean_log_s": statistics.mean(r["time/log"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["default", "tiny"])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every preset (repeatable)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_time.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = [
        measure(None if p == "default" else p, args.iterations, args.warmup, args.overrides) for p in args.presets
    ]
    print(f"medians of {args.iterations} iterations after {args.warmup} warm-up; overrides: {args.overrides or 'none'}")
    print("| preset | images | steps | trained | " + " | ".join(f"{k} s" for k in PHASES) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(PHASES))
    for r in results:
        cells = " | ".join(f"{r['mean_log_s' if k == 'log' else f'median_{k}_s']:.3f}" for k in PHASES)
        print(
            f"| {r['preset']} | {r['images_per_iteration']} | {r['num_inference_steps']} | "
            f"{r['median_selected_fraction']:.2f} | {cells} |"
        )
    machine = {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
