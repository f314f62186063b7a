"""Two configurations of the RL iteration timed interleaved (A, B, A, B, …) in one process.

    python benchmarks/ab_iterations.py --a model.channels_last=true --b model.channels_last=false
    python benchmarks/ab_iterations.py --model small-sd --a model.channels_last=true --b model.channels_last=false

Timings on a shared 2-core machine drift by about ±5% between runs, more than many optimisations
are worth; interleaving puts A and B under the same drift. Both runs use the same seeds, so with
options that do not change the numbers they select the same samples. ``--model small-sd`` is
benchmarks/bench_rl.py's SD-architecture model and settings (weighted sum, whole UNet trained);
the default is the default job (the mini world). Prints the medians after one warm-up iteration
and writes benchmarks/results/ab_iterations.json (``--out`` to keep several).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from parrot_t2i.config import load_config
from parrot_t2i.run import setup_run
from parrot_t2i.trainer import train_iteration

PHASES = ["sample", "update", "iteration"]


def small_sd_overrides(folder: Path) -> list[str]:
    """bench_rl.py's model and its weighted-sum row's config, at bench_rl's default settings."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_rl import SETTINGS, build_model, rl_overrides

    return rl_overrides(str(build_model("small", folder)), "weighted_sum", "group", SETTINGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--a", action="append", default=[], metavar="KEY=VALUE", help="overrides of configuration A (repeatable)"
    )
    parser.add_argument(
        "--b", action="append", default=[], metavar="KEY=VALUE", help="overrides of configuration B (repeatable)"
    )
    parser.add_argument("--model", choices=["default", "small-sd"], default="default")
    parser.add_argument("--iterations", type=int, default=7, help="measured iterations of each, after one warm-up")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ab_iterations.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = small_sd_overrides(Path(tmp) / "model") if args.model == "small-sd" else []
        runs = {
            name: setup_run(load_config(None, [*base, *over, f"train.output_dir={tmp}/{name}"]), Path(tmp) / name)
            for name, over in (("A", args.a), ("B", args.b))
        }
        stats: dict[str, list[dict]] = {name: [] for name in runs}
        for i in range(args.iterations + 1):
            for name, run in runs.items():
                result = train_iteration(run).stats
                if i:
                    stats[name].append(result)

    summary = {
        name: {
            "overrides": over,
            "selected_fraction": statistics.mean(s["selected_fraction"] for s in stats[name]),
            **{f"median_{k}_s": statistics.median(s[f"time/{k}"] for s in stats[name]) for k in PHASES},
        }
        for name, over in (("A", args.a), ("B", args.b))
    }
    print(f"{args.model} model, medians of {args.iterations} interleaved iterations after one warm-up")
    print(
        "| config | overrides | kept fraction | "
        + " | ".join(f"{k} s" for k in PHASES)
        + " |\n|---|---|---:|"
        + "---:|" * len(PHASES)
    )
    for name, row in summary.items():
        print(
            f"| {name} | {' '.join(row['overrides']) or '(defaults)'} | {row['selected_fraction']:.2f} | "
            + " | ".join(f"{row[f'median_{k}_s']:.3f}" for k in PHASES)
            + " |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"model": args.model, "iterations": args.iterations, "results": summary}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
