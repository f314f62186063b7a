"""Our flow SDE step against Flow-GRPO's own ``sde_step_with_logprob``, side by side (issue 17).

    python benchmarks/flow_step_crosscheck.py --flow-grpo PATH/TO/flow_grpo   # a checkout of yifan123/flow_grpo

Imports Flow-GRPO's function from the given checkout (nothing of it is copied here), samples one
step with it on random latents and velocities for every step of a FlowMatchEulerDiscreteScheduler
schedule, then recomputes the mean, the transition's standard deviation and the log-prob of its
sample with ``parrot_t2i.flow`` and ``diffusion.transition_log_prob``. Prints the largest
differences and writes benchmarks/results/flow_step_crosscheck.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from parrot_t2i.diffusion import transition_log_prob
from parrot_t2i.flow import flow_sde_step_mean_std
from parrot_t2i.provenance import code_version

RESULTS = Path(__file__).parent / "results"
FILE = "flow_grpo/diffusers_patch/sd3_sde_with_logprob.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow-grpo", required=True, help="a checkout of github.com/yifan123/flow_grpo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shift", type=float, default=3.0, help="the schedule's shift (SD3.5: 3)")
    parser.add_argument("--noise-level", type=float, default=0.7, help="a (Flow-GRPO: 0.7 for SD3.5)")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("flow_grpo_sde", Path(args.flow_grpo) / FILE)
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)

    scheduler = FlowMatchEulerDiscreteScheduler(shift=args.shift)
    scheduler.set_timesteps(args.steps)
    sigmas, generator = scheduler.sigmas, torch.Generator().manual_seed(0)
    worst = {"mean": 0.0, "std": 0.0, "log_prob": 0.0}
    for i in range(args.steps):
        x, v = torch.randn(4, 16, 8, 8, generator=generator), torch.randn(4, 16, 8, 8, generator=generator)
        prev, log_prob, mean, std_t = theirs.sde_step_with_logprob(
            scheduler, v, scheduler.timesteps[i].repeat(4), x, noise_level=args.noise_level, generator=generator
        )
        ours_mean, ours_std = flow_sde_step_mean_std(
            x, v, sigmas[i].repeat(4), sigmas[i + 1].repeat(4), args.noise_level, float(sigmas[1])
        )
        their_std = std_t * torch.sqrt(sigmas[i] - sigmas[i + 1])
        worst["mean"] = max(worst["mean"], (ours_mean - mean).abs().max().item())
        worst["std"] = max(worst["std"], (ours_std - their_std).abs().max().item())
        worst["log_prob"] = max(
            worst["log_prob"], (transition_log_prob(prev, ours_mean, ours_std) - log_prob).abs().max().item()
        )
    print(f"{args.steps} steps, shift {args.shift}, a = {args.noise_level}: largest |ours − Flow-GRPO's|")
    print("| mean | std | log-prob |\n|---:|---:|---:|")
    print(f"| {worst['mean']:.2e} | {worst['std']:.2e} | {worst['log_prob']:.2e} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "flow_step_crosscheck.json"
    record = {"code_version": code_version(), "settings": vars(args) | {"flow_grpo": FILE}, "max_abs_difference": worst}
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
