"""Our RL loop side by side with a plain diffusers pipeline and with TRL's DDPOTrainer.

    python benchmarks/bench_rl.py                                  # CPU, a small SD-architecture model
    python benchmarks/bench_rl.py --python /path/to/venv/bin/python  # workers in a venv that has trl==0.19.1
    python benchmarks/bench_rl.py --scale sd15 --images 16 --steps 50  # on a GPU: SD 1.5 size, random weights
    python benchmarks/bench_rl.py --family flow                    # the flow rows: a tiny SD3, flow SDE

One SD-architecture pipeline (UNet + VAE + CLIP text encoder, random weights) is saved to a
temporary folder and every contender loads it from there, with the same prompts, batch, DDIM steps,
CFG scale, η and timestep fraction (1: every step trains):

1. sampling B images: our trajectory sampler (records every step's log-prob) vs one
   ``StableDiffusionPipeline`` call with ``output_type="pt"`` from the same generator seed, both
   in NCHW layout (the images are compared: equal up to float noise);
2. one full RL iteration (sample + rewards + update of the whole UNet): ours in ``parrot`` mode
   (Pareto selection over brightness, colorfulness and JPEG compressibility within each prompt's
   images, and once more over the whole batch; dominated samples skip their backward pass) and in
   ``weighted_sum`` mode (every sample trains), both with the package's defaults (channels-last;
   ``--ours-set model.channels_last=false`` to compare), vs ``trl.DDPOTrainer.step``
   (trl==0.19.1, the last release with DDPO) on the weighted sum of the same three rewards;
3. the flow trainers' speed options, each one change to the Parrot row (``SPEED_OPTIONS``): fewer
   steps while training, MixGRPO's SDE window, no CFG while training, the KL's reference pass,
   gradient checkpointing;
4. peak RSS of each worker process (and on a GPU, peak GPU memory).

``--family flow`` runs the same rows on a flow-matching transformer (diffusers' test-size SD3):
our SDE sampler against ``StableDiffusion3Pipeline`` (the images compared are both the
deterministic Euler chain, which is all the pipeline has), and no TRL row (DDPOTrainer is UNet only).

Each contender runs in its own worker process (``--python`` chooses the interpreter: trl is never a
dependency of this package, install it in a separate environment). Each worker runs one warm-up
iteration then ``--repeats`` measured ones; the table shows medians. Writes
benchmarks/results/bench_rl_{device}.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from parrot_t2i.provenance import code_version

RESULTS = Path(__file__).parent / "results"
REWARDS = ["brightness", "colorfulness", "jpeg_compressibility"]
PROMPTS = ["a red circle", "a blue square on a white background", "a green triangle", "a yellow cross at night"]
# Run by the workers' interpreter: the versions the measurement actually used.
VERSIONS = (
    "import importlib.metadata as m, json\nout = {}\n"
    "for p in ['torch', 'diffusers', 'transformers', 'accelerate', 'trl']:\n"
    "    try:\n        out[p] = m.version(p)\n    except m.PackageNotFoundError:\n        out[p] = None\n"
    "print(json.dumps(out))"
)
# The default comparison settings (the CLI's defaults; benchmarks/ab_iterations.py reuses them).
SETTINGS = argparse.Namespace(images=16, group=8, steps=20, guidance=5.0, eta=1.0)
CONTENDERS = ["sampler_ours", "sampler_diffusers", "rl_parrot", "rl_parrot_batch", "rl_weighted_sum", "rl_trl"]
# The flow trainers' speed options (issue 17, item 3), each one change to the rl_parrot row; the
# settings are filled in from the chain length T (``--steps``).
SPEED_OPTIONS = {
    "rl_parrot_fewer_steps": lambda steps: [f"sample.num_inference_steps={max(1, steps // 2)}"],  # Flow-GRPO: 10 vs 40
    "rl_parrot_window": lambda steps: [f"sample.sde_window={max(1, steps // 5)}"],  # MixGRPO: 4 of 25 steps
    "rl_parrot_no_cfg": lambda steps: ["sample.guidance_scale=1.0"],  # one branch while training
    "rl_parrot_kl": lambda steps: ["train.kl_coef=0.01"],  # the reference's extra forward per trained step
    "rl_parrot_checkpointing": lambda steps: ["model.gradient_checkpointing=true"],  # memory for recompute
}
CONTENDERS += list(SPEED_OPTIONS)


# ----------------------------------------------------------------------------- workers (one per process)


def _memory() -> dict[str, float]:
    """Peak RSS of this worker process, and on a GPU the peak memory torch allocated there."""
    import resource

    import torch

    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    if torch.cuda.is_available():
        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def _timed(fn, repeats: int) -> list[float]:
    import torch

    fn()  # warm-up: allocator, kernels, lazy imports
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def _prompts(images: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(images)]


def worker_sampler(args, which: str) -> dict:
    """B images from our sampler (the stochastic chain RL trains on, with its log-probs) or from the
    diffusers pipeline; the images compared are both deterministic for a flow model (its pipeline
    has no SDE) and both η-stochastic DDIM for a UNet."""
    import torch

    from parrot_t2i.diffusion import CFG
    from parrot_t2i.policies import load_policy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = _prompts(args.images)
    flow = args.family == "flow"
    if which == "ours":
        policy = load_policy(args.model).to(device)
        policy.set_sampler(args.steps, args.eta)
        cond, uncond = policy.encode(prompts), policy.encode_negative().expand(len(prompts))

        def run(seed=0, stochastic=True):
            trajectory = policy.sample(
                cond,
                uncond,
                CFG(args.guidance),
                generator=torch.Generator(device).manual_seed(seed),
                stochastic=stochastic,
            )
            with torch.no_grad():
                return policy.decode(trajectory.latents[:, -1])
    elif flow:
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(args.model, text_encoder_3=None, tokenizer_3=None).to(device)
        pipe.set_progress_bar_config(disable=True)

        def run(seed=0, stochastic=False):
            return pipe(
                prompts,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                output_type="pt",
                generator=torch.Generator(device).manual_seed(seed),
            ).images
    else:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            args.model, safety_checker=None, requires_safety_checker=False
        ).to(device)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)

        def run(seed=0, stochastic=True):
            return pipe(
                prompts,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                eta=args.eta,
                output_type="pt",
                generator=torch.Generator(device).manual_seed(seed),
            ).images

    times = _timed(run, args.repeats)
    images = run(seed=123, stochastic=not flow).float().cpu()
    torch.save(images, Path(args.work) / f"images_{which}.pt")
    return {"seconds": times, **_memory()}


def rl_overrides(model: str, objective: str, selection: str, args) -> list[str]:
    """Our config for the shared model and the settings every RL contender uses (``args``)."""
    return [
        f"model.pretrained={model}",
        "model.trainable=full",
        "pen.pretrained=null",
        "train.pen=false",
        "prompts.identifiers=false",
        f"prompts.prompts={json.dumps(PROMPTS)}",
        f"rewards={json.dumps(REWARDS)}",
        f"objective.name={objective}",
        f"objective.selection={selection}",
        f"objective.pareto_filter={str(objective == 'parrot').lower()}",  # pinned: the filter in Parrot mode only
        "objective.reward_normalization=none",
        f"sample.num_inference_steps={args.steps}",
        f"sample.guidance_scale={args.guidance}",
        f"sample.eta={args.eta}",
        f"sample.prompts_per_iteration={args.images // args.group}",
        f"sample.images_per_prompt={args.group}",
        f"sample.batch_size={args.images}",
        f"train.batch_size={args.images}",
        "train.timestep_fraction=1.0",
        "train.learning_rate=1e-5",
        "eval.file=null",
    ]


def worker_ours(args, objective: str, selection: str = "group", extra: list[str] = (), name: str = "") -> dict:
    from parrot_t2i.config import load_config
    from parrot_t2i.run import setup_run
    from parrot_t2i.trainer import train_iteration

    work = Path(args.work) / (name or objective + selection)
    overrides = [
        *rl_overrides(args.model, objective, selection, args),
        f"train.output_dir={work}",
        *args.ours_set,
        *extra,
    ]
    run = setup_run(load_config(None, overrides), work)
    fractions, phases = [], []

    def iteration():
        stats = train_iteration(run).stats
        fractions.append(stats["selected_fraction"] if objective == "parrot" else 1.0)
        phases.append({k.removeprefix("time/"): stats[k] for k in ("time/sample", "time/reward", "time/update")})

    times = _timed(iteration, args.repeats)
    return {"seconds": times, **_memory(), "trained_fraction": fractions[1:], "phases": phases[1:]}


def worker_trl(args) -> dict:
    import torch
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    from parrot_t2i.rewards import build_rewards

    rewards = build_rewards(REWARDS)

    def reward_fn(images, prompts, metadata):  # the weighted sum (equal weights) of the same rewards
        scores = torch.stack([r(images.float().clamp(0, 1), list(prompts)) for r in rewards], 1)
        return scores.mean(1), {}

    prompt_cycle = iter(range(10**9))
    config = DDPOConfig(
        num_epochs=1,
        sample_num_steps=args.steps,
        sample_eta=args.eta,
        sample_guidance_scale=args.guidance,
        sample_batch_size=args.images,
        sample_num_batches_per_epoch=1,
        train_batch_size=args.images,
        train_gradient_accumulation_steps=1,
        train_timestep_fraction=1.0,
        train_learning_rate=1e-5,
        train_use_8bit_adam=False,
        train_cfg=True,
        per_prompt_stat_tracking=False,
        mixed_precision="no",
        log_with=None,
        save_freq=10**9,
        project_kwargs={"project_dir": str(Path(args.work) / "trl"), "automatic_checkpoint_naming": False},
        accelerator_kwargs={"cpu": not torch.cuda.is_available()},
    )
    pipeline = DefaultDDPOStableDiffusionPipeline(args.model, use_lora=False)
    trainer = DDPOTrainer(config, reward_fn, lambda: (PROMPTS[next(prompt_cycle) % len(PROMPTS)], {}), pipeline)
    epoch = iter(range(10**9))
    times = _timed(lambda: trainer.step(next(epoch), 0), args.repeats)
    return {"seconds": times, **_memory()}


# ----------------------------------------------------------------------------- the driver


LATENT_SIDE = {"tiny": 8, "small": 16}  # CPU scales: latents 4×S×S, images 2S×2S


def build_model(scale: str, family: str, path: Path) -> Path:
    """The shared pipeline folder: SD 1.5's real shapes (GPU) or a small SD-architecture one (CPU);
    for ``--family flow`` diffusers' test-size SD3 (one joint block, latents 4×32×32, no T5)."""
    if family == "flow":
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from tiny_models import build_tiny_sd3

        return build_tiny_sd3(path)
    if scale == "sd15":
        sys.path.insert(0, str(Path(__file__).parent))
        from sd15_iteration import build_sd15

        return build_sd15(path)
    from parrot_t2i.tiny import build_tiny_sd

    return build_tiny_sd(path, sample_size=LATENT_SIDE[scale], with_vae=True, hidden_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scale",
        choices=["tiny", "small", "sd15"],
        default="small",
        help="small: latents 4×16×16 (CPU); sd15: SD 1.5 size (GPU)",
    )
    parser.add_argument(
        "--images", type=int, default=SETTINGS.images, help="images per iteration (a multiple of --group)"
    )
    parser.add_argument("--group", type=int, default=SETTINGS.group, help="images per prompt: Parrot's selection group")
    parser.add_argument("--steps", type=int, default=SETTINGS.steps)
    parser.add_argument("--guidance", type=float, default=SETTINGS.guidance)
    parser.add_argument("--eta", type=float, help="the sampler's noise (default: DDIM η 1.0; the flow SDE's a 0.7)")
    parser.add_argument(
        "--family",
        choices=["unet", "flow"],
        default="unet",
        help="unet: SD-architecture UNet + DDIM; flow: SD3 transformer + flow SDE (TRL has no flow trainer)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the workers (one with trl==0.19.1 for the TRL row)"
    )
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="contenders (default: all that apply)")
    parser.add_argument(
        "--ours-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for our RL rows, e.g. model.channels_last=false (repeatable)",
    )
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/bench_rl_{cpu,gpu}.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.eta = args.eta if args.eta is not None else (0.7 if args.family == "flow" else SETTINGS.eta)
    args.only = args.only or [c for c in CONTENDERS if not (args.family == "flow" and c == "rl_trl")]
    if args.images % args.group:
        parser.error(f"--images ({args.images}) must be a multiple of --group ({args.group})")
    if args.worker:
        result = {
            "sampler_ours": lambda: worker_sampler(args, "ours"),
            "sampler_diffusers": lambda: worker_sampler(args, "diffusers"),
            "rl_parrot": lambda: worker_ours(args, "parrot"),
            "rl_parrot_batch": lambda: worker_ours(args, "parrot", "global"),
            "rl_weighted_sum": lambda: worker_ours(args, "weighted_sum"),
            "rl_trl": lambda: worker_trl(args),
            **{
                name: lambda name=name, option=option: worker_ours(args, "parrot", extra=option(args.steps), name=name)
                for name, option in SPEED_OPTIONS.items()
            },
        }[args.worker]()
        Path(args.work, f"{args.worker}.json").write_text(json.dumps(result))
        return

    started = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.scale, args.family, Path(tmp) / "model")
        common = [
            "--family",
            args.family,
            *(f"--ours-set={o}" for o in args.ours_set),
            "--images",
            str(args.images),
            "--group",
            str(args.group),
            "--steps",
            str(args.steps),
            "--guidance",
            str(args.guidance),
            "--eta",
            str(args.eta),
            "--repeats",
            str(args.repeats),
            "--model",
            str(model),
            "--work",
            tmp,
        ]
        for name in args.only:
            print(f"measuring {name} ...", flush=True)
            proc = subprocess.run(
                [args.python, __file__, "--worker", name, *common], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"  {name} did not run: {reason}")
                results[name] = {"error": reason}
                continue
            results[name] = json.loads(Path(tmp, f"{name}.json").read_text())
        versions = subprocess.run([args.python, "-c", VERSIONS], capture_output=True, text=True, check=False)
        same_images = None
        if {"sampler_ours", "sampler_diffusers"} <= results.keys() and all(
            "error" not in results[k] for k in ("sampler_ours", "sampler_diffusers")
        ):
            import torch

            ours, theirs = torch.load(Path(tmp) / "images_ours.pt"), torch.load(Path(tmp) / "images_diffusers.pt")
            same_images = float((ours - theirs).abs().max())

    def median(name: str) -> float | None:
        r = results.get(name, {})
        return statistics.median(r["seconds"]) if "seconds" in r else None

    def ratio(a: str, b: str) -> float | None:
        return median(a) / median(b) if median(a) and median(b) else None

    pairs = {  # label: (contender, baseline, target)
        "sampler_ours / diffusers pipeline": ("sampler_ours", "sampler_diffusers", 1.10),
        "rl parrot / trl DDPOTrainer": ("rl_parrot", "rl_trl", 0.5),
        "rl parrot, selection over the batch / trl DDPOTrainer": ("rl_parrot_batch", "rl_trl", 0.5),
        "rl weighted_sum / trl DDPOTrainer": ("rl_weighted_sum", "rl_trl", 1.0),
        **{f"{name} / rl_parrot": (name, "rl_parrot", None) for name in SPEED_OPTIONS},
    }
    ratios = {label: (ratio(a, b), target) for label, (a, b, target) in pairs.items() if {a, b} <= set(args.only)}
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    model_name = "tiny SD3 (flow SDE)" if args.family == "flow" else f"{args.scale} UNet (DDIM)"
    print(
        f"\n{model_name} model, {args.images} images/iteration ({args.group} per prompt), {args.steps} steps, "
        f"CFG {args.guidance}, noise {args.eta}; median of {args.repeats}; {device}"
    )
    gpu = torch.cuda.is_available()
    print(
        f"| contender | median s | all s | peak {'GPU' if gpu else 'RSS'} MB | trained fraction | sample s | update "
        "s |\n|---|---:|---|---:|---:|---:|---:|"
    )
    for name in args.only:
        r = results[name]
        if "error" in r:
            print(f"| {name} | — | did not run: {r['error'][:80]} | — | — | | |")
            continue
        fraction = f"{statistics.mean(r['trained_fraction']):.2f}" if r.get("trained_fraction") else ""
        phases = (
            [f"{statistics.median(p[k] for p in r['phases']):.3f}" for k in ("sample", "update")]
            if r.get("phases")
            else ["", ""]
        )
        print(
            f"| {name} | {median(name):.3f} | {', '.join(f'{s:.3f}' for s in r['seconds'])} | "
            f"{r['peak_gpu_mb' if gpu else 'peak_rss_mb']:.0f} | {fraction} | {' | '.join(phases)} |"
        )
    print("\n| ratio | measured | target |\n|---|---:|---:|")
    for label, (value, target) in ratios.items():
        if value is not None or target is not None:
            print(
                f"| {label} | {'—' if value is None else f'{value:.3f}'} | {'' if target is None else f'≤ {target}'} |"
            )
    if same_images is not None:
        print(f"\nsampler images, ours vs pipeline from the same seed: max |difference| = {same_images:.2e}")
    where = "gpu" if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else RESULTS / f"bench_rl_{'flow_' if args.family == 'flow' else ''}{where}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": {
            k: getattr(args, k)
            for k in ("family", "scale", "images", "group", "steps", "guidance", "eta", "repeats", "ours_set")
        },
        "rewards": REWARDS,
        "device": device,
        "versions": json.loads(versions.stdout) if versions.returncode == 0 else None,
        "python": platform.python_version(),
        "results": results,
        "medians_s": {name: median(name) for name in args.only},
        "ratios": {label: {"measured": value, "target": target} for label, (value, target) in ratios.items()},
        "sampler_max_abs_image_difference": same_images,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "code_version": code_version(),
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
