"""Time per RL iteration, split by phase, for packaged presets on this machine.

    python benchmarks/iteration_time.py                  # default job and the tiny preset
    python benchmarks/iteration_time.py --presets tiny --iterations 10

Prints a table of medians over the measured iterations (after warm-up) and writes
benchmarks/results/iteration_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from parrot_t2i.config import load_config  # noqa: E402
from parrot_t2i.trainer import setup_run, train_iteration  # noqa: E402

PHASES = ["time/sample", "time/reward", "time/update", "time/iteration"]


def measure(preset: str | None, iterations: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(preset, [f"train.output_dir={tmp}"])
        run = setup_run(config, Path(tmp))
        for _ in range(warmup):
            train_iteration(run)
        rows = [train_iteration(run).stats for _ in range(iterations)]
    return {
        "preset": preset or "default",
        "images_per_iteration": config.sample.prompts_per_iteration * config.sample.images_per_prompt,
        "num_inference_steps": config.sample.num_inference_steps,
        "trainable": config.model.trainable,
        "iterations_measured": iterations,
        "median_selected": statistics.median(r["selected"] for r in rows),
        **{f"median_{k.split('/')[1]}_s": statistics.median(r[k] for r in rows) for k in PHASES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["default", "tiny"])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "iteration_time.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = [measure(None if p == "default" else p, args.iterations, args.warmup) for p in args.presets]
    header = f"{'preset':<10}{'images':>8}{'steps':>7}{'|P|':>6}{'sample s':>10}{'reward s':>10}{'update s':>10}{'total s':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['preset']:<10}{r['images_per_iteration']:>8}{r['num_inference_steps']:>7}{r['median_selected']:>6.0f}"
            f"{r['median_sample_s']:>10.3f}{r['median_reward_s']:>10.3f}{r['median_update_s']:>10.3f}{r['median_iteration_s']:>10.3f}"
        )
    machine = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
