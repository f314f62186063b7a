"""What each implementation choice around the UNet call is worth, measured one at a time.

    python benchmarks/unet_variants.py                                 # the mini model, default batch
    python benchmarks/unet_variants.py --model builtin:tiny --batch 16
    python benchmarks/unet_variants.py --compile                       # also torch.compile (slow to build)

For one batch of guided denoising steps (the sampler's inner loop) and one guided forward +
backward (the update's inner loop) on the same UNet, compares:

- classifier-free guidance as **one** batched UNet call over [∅; c] (what the package does) vs two
  calls, one per branch;
- ``torch.no_grad`` (what the package uses while sampling) vs ``torch.inference_mode``;
- contiguous (NCHW) vs ``channels_last`` memory format of UNet weights and latents (the package's
  default, ``model.channels_last``);
- eager vs ``torch.compile`` (with ``--compile``; the build time is reported apart).

Each variant changes one thing from the baseline (one batched call, no_grad, NCHW, eager) and is
timed ``--repeats`` times after a warm-up; the table shows medians and the ratio to the baseline.
Writes benchmarks/results/unet_variants.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from parrot_t2i.diffusion import classifier_free_guidance, guided_noise
from parrot_t2i.policies.unet import T2IPolicy


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:mini")
    parser.add_argument("--batch", type=int, default=32, help="images per UNet call (the default sample.batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps per sampling measurement")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes to build on a CPU)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "unet_variants.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    policy = T2IPolicy.from_pretrained(args.model)
    unet, scheduler = policy.unet.eval(), policy.scheduler
    unet.requires_grad_(False)
    for name, p in unet.named_parameters():  # what the package trains by default: cross-attention
        p.requires_grad_("attn2" in name)
    scheduler.set_timesteps(args.steps)
    cond = policy.encode(["a red circle on a white background"] * args.batch)
    uncond = policy.encode_negative().expand(args.batch)
    x0 = torch.randn(args.batch, *policy.latent_shape())
    t = scheduler.timesteps[:1]

    def sample(one_call: bool, mode, latents):
        with mode():
            x = latents
            for step in scheduler.timesteps:
                if one_call:
                    eps = guided_noise(unet, x, step.reshape(1), cond, uncond, args.guidance)
                else:
                    e_u = unet(x, step, encoder_hidden_states=uncond.embeds, return_dict=False)[0]
                    e_c = unet(x, step, encoder_hidden_states=cond.embeds, return_dict=False)[0]
                    eps = classifier_free_guidance(e_u, e_c, args.guidance)
                x = scheduler.step(eps, step, x, eta=1.0).prev_sample
        return x

    def update(latents):
        eps = guided_noise(unet, latents, t, cond, uncond, args.guidance)
        eps.square().mean().backward()
        unet.zero_grad(set_to_none=True)

    rows: list[dict] = []

    def measure(name: str, phase: str, fn, baseline: str | None = None, **extra) -> None:
        seconds = _median_seconds(fn, args.repeats)
        base = next((r["seconds"] for r in rows if r["variant"] == baseline and r["phase"] == phase), None)
        rows.append(
            {
                "variant": name,
                "phase": phase,
                "seconds": seconds,
                "vs_baseline": seconds / base if base else 1.0,
                **extra,
            }
        )
        print(f"| {phase} | {name} | {seconds:.4f} | {rows[-1]['vs_baseline']:.3f} |", flush=True)

    print(
        f"{args.model}: batch {args.batch}, latents {tuple(x0.shape[1:])}, {args.steps} sampling steps, CFG "
        f"{args.guidance}, {torch.get_num_threads()} threads"
    )
    print("| phase | variant | median s | vs baseline |\n|---|---|---:|---:|")
    package = "baseline: one batched CFG call, no_grad, NCHW, eager"
    measure(package, "sample", lambda: sample(True, torch.no_grad, x0))
    measure("two UNet calls per step", "sample", lambda: sample(False, torch.no_grad, x0), package)
    measure("inference_mode", "sample", lambda: sample(True, torch.inference_mode, x0), package)
    measure(package, "update step", lambda: update(x0))

    unet.to(memory_format=torch.channels_last)
    x_cl = x0.contiguous(memory_format=torch.channels_last)
    measure("channels_last", "sample", lambda: sample(True, torch.no_grad, x_cl), package)
    measure("channels_last", "update step", lambda: update(x_cl), package)
    unet.to(memory_format=torch.contiguous_format)

    if args.compile:
        eager_forward = unet.forward
        unet.forward = torch.compile(eager_forward)
        started = time.perf_counter()
        sample(True, torch.no_grad, x0)
        build = time.perf_counter() - started
        measure("torch.compile", "sample", lambda: sample(True, torch.no_grad, x0), package, build_seconds=build)
        started = time.perf_counter()
        update(x0)
        build = time.perf_counter() - started
        measure("torch.compile", "update step", lambda: update(x0), package, build_seconds=build)
        unet.forward = eager_forward
        print(
            "torch.compile build (first call): "
            + ", ".join(f"{r['phase']} {r['build_seconds']:.1f} s" for r in rows if "build_seconds" in r)
        )

    machine = {
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    settings = {k: getattr(args, k) for k in ("model", "batch", "steps", "guidance", "repeats")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "settings": settings, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
