"""The ``parrot`` command line. User mistakes end in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ConfigError, load_config, preset_names
from .errors import ParrotError


def _train(args: argparse.Namespace) -> None:
    from .trainer import train

    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    train(load_config(args.config, overrides))


def _rewards(args: argparse.Namespace) -> None:
    from .rewards import REGISTRY

    for name in sorted(REGISTRY):
        doc = (REGISTRY[name].__doc__ or "").strip().splitlines()
        print(f"{name:24} {doc[0] if doc else ''}")


def _generate(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .evaluate import generate
    from .images import save_grid
    from .runs import load_policy

    for flag, ok, allowed in [("--n", args.n >= 1, ">= 1"), ("--steps", args.steps >= 1, ">= 1"), ("--guidance-scale", args.guidance_scale >= 1, ">= 1"), ("--eta", 0 <= args.eta <= 1, "in [0, 1]")]:
        if not ok:
            raise ConfigError(f"{flag} must be {allowed} (got {getattr(args, flag[2:].replace('-', '_'))})")
    policy, source = load_policy(args.run, args.model)
    images = generate(
        policy, [args.prompt] * args.n, seed=args.seed, num_inference_steps=args.steps, guidance_scale=args.guidance_scale, eta=args.eta, desc="generate"
    )
    out = save_grid(images, args.out)
    sidecar = out.with_suffix(".json")
    settings = {"prompt": args.prompt, "model": source, "n": args.n, "seed": args.seed, "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale, "eta": args.eta}
    sidecar.write_text(json.dumps(settings, indent=2))
    print(f"wrote {out} and {Path(sidecar)}")


def _mini(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .mini import WEIGHTS

    for flag, value in [("--steps", args.steps), ("--finetune-steps", args.finetune_steps)]:
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1 (got {value})")
    out, work, resume = Path(args.out) if args.out else WEIGHTS, Path(args.work_dir), not args.restart
    steps = {"steps": args.steps} if args.steps else {}
    if args.mini_command == "train-t2i":
        from dataclasses import replace

        from .mini.train_t2i import T2ITrainConfig, train_t2i

        cfg = T2ITrainConfig()
        if args.steps:  # phase 1 length; its learning-rate horizon keeps the shipped 2:1 proportion
            cfg = replace(cfg, pretrain_steps=args.steps, pretrain_horizon=2 * args.steps)
        if args.finetune_steps:
            cfg = replace(cfg, finetune_steps=args.finetune_steps)
        train_t2i(out if args.out else WEIGHTS / "t2i", work / "t2i", cfg, resume=resume)
    elif args.mini_command == "train-pen":
        from .mini.train_pen import train_pen

        train_pen(out if args.out else WEIGHTS / "pen", work / "pen", **steps, resume=resume)
    else:
        from .mini import train_rewards

        for name in ("checker", "preference", "alignment"):
            getattr(train_rewards, f"train_{name}")(out / name, work / name, **steps, resume=resume)
    print(f"done; models written under {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parrot", description="Parrot: Pareto-optimal multi-reward RL for text-to-image models")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info-level logs")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a text-to-image model with multi-reward RL")
    train.add_argument("--config", help=f"YAML preset: a path or a packaged name ({', '.join(preset_names())}); default: built-in defaults")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. --set train.learning_rate=1e-5 (repeatable)")
    train.add_argument("--output-dir", help="run folder (same as --set train.output_dir=...)")
    train.set_defaults(func=_train)

    rewards = sub.add_parser("rewards", help="list the registered reward names")
    rewards.set_defaults(func=_rewards)

    gen = sub.add_parser("generate", help="draw images for a prompt with a model or a trained run")
    gen.add_argument("prompt")
    source = gen.add_mutually_exclusive_group()
    source.add_argument("--run", help="a run folder written by `parrot train` (its last checkpoint)")
    source.add_argument("--model", default="builtin:mini", help="hub id, diffusers folder or builtin:NAME (default: builtin:mini)")
    gen.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    gen.add_argument("--guidance-scale", type=float, default=5.0)
    gen.add_argument("--eta", type=float, default=0.0, help="DDIM η (default 0: deterministic)")
    gen.add_argument("--out", default="grid.png", help="PNG grid to write; settings go to a .json beside it")
    gen.set_defaults(func=_generate)

    mini = sub.add_parser("mini", help="(re)build the embedded mini world's models")
    mini.add_argument("mini_command", choices=["train-t2i", "train-rewards", "train-pen"])
    mini.add_argument("--out", help="where to write the model(s) (default: the package's shipped weights)")
    mini.add_argument("--work-dir", default="runs/mini-train", help="checkpoints and logs; an interrupted run resumes from here")
    mini.add_argument("--steps", type=int, help="training steps (train-t2i: of phase 1, ε); default: the shipped models' settings")
    mini.add_argument("--finetune-steps", type=int, help="train-t2i only: steps of phase 2 (v-prediction fine-tuning)")
    mini.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --work-dir")
    mini.set_defaults(func=_mini)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar per loaded model is noise
    diffusers.utils.logging.disable_progress_bar()
    try:
        args.func(args)
    except (ConfigError, ParrotError) as err:
        print(f"parrot: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parrot: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
