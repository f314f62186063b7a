"""The ``parrot`` command line. User mistakes end in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .builtin import is_mini_world_model
from .config import (
    ONE_OR_MORE,
    POSITIVE,
    RANGES,
    UNIT,
    ConfigError,
    Range,
    check_ranges,
    load_config,
    preset_names,
)
from .errors import ParrotError, RewardError


def _check_flags(args: argparse.Namespace, **ranges: Range) -> None:
    """The flags given (``n=ONE_OR_MORE`` checks ``--n``) against their ranges, by config.check_ranges."""
    given = ((name, getattr(args, name)) for name in ranges)
    check_ranges((f"--{name.replace('_', '-')}", value, ranges[name]) for name, value in given if value is not None)


def _train(args: argparse.Namespace) -> None:
    from .trainer import train

    overrides = list(args.set or [])
    if args.resume:
        from .runs import run_config

        if args.config or args.output_dir:
            raise ConfigError(
                "--resume continues a run with its own config.yaml and folder: drop --config/--output-dir (--set may "
                "extend it, e.g. train.num_iterations)"
            )
        train(
            run_config(args.resume, "--resume", [*overrides, f"train.output_dir={args.resume}"]),
            resume=Path(args.resume),
        )
        return
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
    from dataclasses import replace

    from .evaluate import infer, inference_from_config, score
    from .identifiers import DEFAULT_TEMPLATE, choose_identifiers, identifier_strings
    from .images import image_path, save_grid
    from .pen import PromptExpander
    from .policies import load_policy
    from .rewards import build_rewards
    from .runs import open_combined, open_run, run_expander, run_policy

    _check_flags(
        args,
        n=ONE_OR_MORE,
        eta=UNIT,  # 0 allowed here: a deterministic sample
        w1=RANGES["eval.w1"],
        w2=RANGES["eval.w2"],
        guidance_rescale=RANGES["eval.guidance_rescale"],
        steps=RANGES["sample.num_inference_steps"],
        guidance_scale=RANGES["sample.guidance_scale"],
    )
    reward_names = [r.strip() for r in (args.rewards or "").split(",") if r.strip()]
    if args.run and args.pen:
        raise ConfigError("--pen goes with --model; a run uses its own (trained) PEN, or --pen-run's")
    if args.pen_run and not args.run:
        raise ConfigError("--pen-run goes with --run: the T2I model of --run with the PEN of --pen-run")
    if args.run:
        if args.pen_run:  # the decoupled ablation: two runs combined
            config, policy, expander = open_combined(args.run, args.pen_run)
            source = f"{args.run} with the PEN of {args.pen_run}"
        else:
            config, checkpoint = open_run(args.run)
            policy, expander, source = run_policy(config, checkpoint), run_expander(config, checkpoint), str(checkpoint)
        expander = None if args.no_expand else expander
        inference = inference_from_config(config, expander)
        strings = identifier_strings(
            len(config.rewards), config.prompts.identifier_template, config.prompts.identifier_strings
        )
        reward_specs = reward_names or config.rewards  # the run's rewards, with their arguments
        reward_names = [getattr(spec, "name", spec) for spec in reward_specs]
        default_identifiers = "all" if config.prompts.identifiers else "none"
    else:
        policy, source = load_policy(args.model), args.model
        pen = args.pen or ("builtin:mini" if is_mini_world_model(args.model) else None)
        expander = None if args.no_expand or not pen else PromptExpander.from_pretrained(pen)
        config = load_config(None)  # a model without a run: the config defaults are its inference
        inference = inference_from_config(config, expander, trained_identifiers=False)
        reward_specs = reward_names
        strings = identifier_strings(len(reward_names), DEFAULT_TEMPLATE) if reward_names else []
        default_identifiers = "none"  # a base model has not learnt any identifier
    if is_mini_world_model(config.model.pretrained if args.run else args.model):
        _warn_unsupported_words(args.prompt)
    if not strings and args.identifiers not in (None, "none"):
        raise ConfigError("--identifiers needs to know the rewards: use --run, or --rewards with --model")
    inference = replace(
        inference,
        identifiers=choose_identifiers(args.identifiers or default_identifiers, strings),
        original_guidance=inference.original_guidance and not args.no_original_guidance,
        w1=inference.w1 if args.w1 is None else args.w1,
        w2=inference.w2 if args.w2 is None else args.w2,
        guidance_rescale=inference.guidance_rescale if args.guidance_rescale is None else args.guidance_rescale,
        guidance_scale=args.guidance_scale or inference.guidance_scale,
        num_inference_steps=args.steps or inference.num_inference_steps,
        noise_level=args.eta,
        seed=args.seed,
    )
    rewards = build_rewards(reward_specs)  # before sampling: a typo fails fast
    out = image_path(args.out)
    images, expansions = infer(policy, [args.prompt] * args.n, inference, desc="generate")
    save_grid(images, out)
    scores = score(rewards, images, [args.prompt] * args.n) if rewards else None
    guidance = (
        {"mode": "original-prompt-centred (Eq. 5)", "w1": inference.w1, "w2": inference.w2}
        if inference.original_guidance
        else {"mode": "classifier-free", "scale": inference.guidance_scale}
    )
    guidance["rescale"] = inference.guidance_rescale
    record = {
        "prompt": args.prompt,
        "model": source,
        "expanded": expander is not None,
        "identifiers": inference.identifiers,
        "guidance": guidance,
        "seed": args.seed,
        "num_inference_steps": inference.num_inference_steps,
        "eta": args.eta,
        "images": [
            {"expansion": text, **({"rewards": dict(zip(reward_names, row.tolist()))} if scores is not None else {})}
            for text, row in zip(expansions, scores if scores is not None else [None] * args.n)
        ],
    }
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(record, indent=2))
    print(f"wrote {out} and {sidecar}")
    if scores is not None:
        print("mean rewards: " + ", ".join(f"{n} {v:.4f}" for n, v in zip(reward_names, scores.mean(0).tolist())))


def _evaluate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .evaluate import evaluate, inference_from_config
    from .policies import load_policy
    from .prompts import read_prompt_file
    from .report import Entry, write_report
    from .rewards import build_rewards
    from .runs import open_combined, open_run, run_expander, run_policy

    if not args.run and not args.model and not args.combine:
        raise ConfigError("name at least one --run DIR, --combine T2I_RUN PEN_RUN or --model ID to evaluate")
    _check_flags(args, images_per_prompt=RANGES["eval.images_per_prompt"])
    prompts = read_prompt_file(args.prompts, "--prompts")
    runs = [
        (Path(run).name, str(checkpoint), config, run_policy(config, checkpoint), run_expander(config, checkpoint))
        for run, (config, checkpoint) in ((run, open_run(run)) for run in args.run)
    ]
    for t2i_run, pen_run in args.combine or []:
        label = f"{Path(t2i_run).name} + PEN of {Path(pen_run).name}"
        runs.append((label, f"{t2i_run} + {pen_run}", *open_combined(t2i_run, pen_run)))
    specs = (
        [r.strip() for r in args.rewards.split(",") if r.strip()]
        if args.rewards
        else (runs[0][2].rewards if runs else [])
    )
    if not specs:
        raise ConfigError(
            "--rewards is needed when only --model entries are given (e.g. --rewards mini_aesthetic,mini_alignment)"
        )
    rewards = build_rewards(specs)  # before any sampling: a typo fails fast
    names = [getattr(spec, "name", spec) for spec in specs]
    reference = [float(v) for v in args.reference.split(",")] if args.reference else None
    if reference is not None and len(reference) != len(names):
        raise ConfigError(f"--reference needs one value per reward ({len(names)}: {names}), got {reference}")
    entries = []
    for label, source, config, policy, expander in runs:
        inference = replace(inference_from_config(config, expander), seed=args.seed)
        evaluation = evaluate(
            policy, rewards, names, prompts, images_per_prompt=args.images_per_prompt, inference=inference, desc=label
        )
        entries.append(Entry(label, source, evaluation))
    for (
        model
    ) in args.model:  # a base model: the prompt as given (no PEN, no identifiers), the config defaults' guidance
        inference = replace(inference_from_config(load_config(None), None, trained_identifiers=False), seed=args.seed)
        evaluation = evaluate(
            load_policy(model),
            rewards,
            names,
            prompts,
            images_per_prompt=args.images_per_prompt,
            inference=inference,
            desc=model,
        )
        entries.append(Entry(model, model, evaluation))
    results = write_report(entries, args.out, reference, args.prompts, args.images_per_prompt)
    header = ["entry", *names, "average", "HV per prompt"]
    print(" | ".join(header))
    for entry in results["entries"]:
        print(
            " | ".join(
                [
                    entry["label"],
                    *(
                        f"{entry['rewards'][n]['mean']:.4f}±{entry['rewards'][n]['ci95']:.4f}"
                        for n in [*names, "average"]
                    ),
                    f"{entry['hypervolume_per_prompt']:.4g}",
                ]
            )
        )
    print(f"wrote {Path(args.out) / 'report.html'}, report.md and results.json")


def _warn_unsupported_words(prompt: str) -> None:
    from .mini.world import unsupported_words

    words = unsupported_words(prompt)
    if words:
        print(
            f"parrot: warning: the mini world has no {', '.join(repr(w) for w in words)}: the model will not draw "
            "them (docs/MINI_WORLD.md lists what it has)",
            file=sys.stderr,
        )


def _sft_pen(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .pen import PromptExpander
    from .pen_sft import read_pairs, sample_from, sft_pen

    _check_flags(args, steps=ONE_OR_MORE, batch_size=ONE_OR_MORE, learning_rate=POSITIVE)
    if args.data == "builtin:mini":
        from .mini.train_pen import grammar_pairs as pairs
    else:
        pairs = sample_from(read_pairs(args.data))
    pen = PromptExpander.from_pretrained(args.model, args.template)
    out = sft_pen(
        pen,
        pairs,
        args.out,
        Path(args.work_dir),
        steps=args.steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
        resume=not args.restart,
    )
    print(f"done; the PEN is in {out} (train with it: --set pen.pretrained={out})")


def _mini(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .mini import WEIGHTS

    _check_flags(args, steps=ONE_OR_MORE, finetune_steps=ONE_OR_MORE)
    flow_only = args.patch_size is not None or args.layers is not None or args.freeze_text_encoder
    if flow_only and args.mini_command != "train-flow":
        raise ConfigError("--patch-size, --layers and --freeze-text-encoder go with train-flow")
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
    elif args.mini_command == "train-flow":
        from dataclasses import replace

        from .mini.train_flow import FlowTrainConfig, train_flow

        cfg = replace(FlowTrainConfig(), **steps)
        if args.patch_size is not None:
            cfg = replace(cfg, patch_size=args.patch_size)
        if args.layers is not None:
            cfg = replace(cfg, num_layers=args.layers)
        if args.freeze_text_encoder:
            cfg = replace(cfg, train_text_encoder=False)
        train_flow(out if args.out else WEIGHTS / "flow", work / "flow", cfg, resume=resume)
    elif args.mini_command == "train-pen":
        from .mini.train_pen import train_pen

        train_pen(out if args.out else WEIGHTS / "pen", work / "pen", **steps, resume=resume)
    else:
        from .mini import train_rewards

        for name in ("checker", "preference", "alignment"):
            getattr(train_rewards, f"train_{name}")(out / name, work / name, **steps, resume=resume)
    print(f"done; models written under {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parrot", description="Parrot: Pareto-optimal multi-reward RL for text-to-image models"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show info-level logs")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a text-to-image model with multi-reward RL")
    train.add_argument(
        "--config",
        help=f"YAML preset: a path or a packaged name ({', '.join(preset_names())}); default: built-in defaults",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.learning_rate=1e-5 (repeatable)",
    )
    train.add_argument("--output-dir", help="run folder (same as --set train.output_dir=...)")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its newest checkpoint (bit-identical on CPU)",
    )
    train.set_defaults(func=_train)

    rewards = sub.add_parser("rewards", help="list the registered reward names")
    rewards.set_defaults(func=_rewards)

    gen = sub.add_parser("generate", help="draw images for a prompt with a model or a trained run")
    gen.add_argument("prompt")
    source = gen.add_mutually_exclusive_group()
    source.add_argument("--run", help="a run folder written by `parrot train` (its last checkpoint)")
    source.add_argument(
        "--model", default="builtin:mini", help="hub id, diffusers folder or builtin:NAME (default: builtin:mini)"
    )
    gen.add_argument(
        "--pen", help="with --model: the prompt expansion network (default: builtin:mini for builtin:mini, else none)"
    )
    gen.add_argument(
        "--pen-run",
        help="with --run: the PEN trained by another run (the decoupled ablation: a train.pen=false run's T2I model "
        "with a train.t2i=false run's PEN)",
    )
    gen.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    gen.add_argument(
        "--identifiers",
        help="reward identifiers to prefix: all, none, or reward numbers such as 1,3 (default: all for a run trained "
        "with them, else none)",
    )
    gen.add_argument(
        "--w1",
        type=float,
        help="weight of the original prompt in Eq. 5 guidance (default: the run's eval.w1, else the config default)",
    )
    gen.add_argument(
        "--w2",
        type=float,
        help="weight of the expanded prompt in Eq. 5 guidance (default: the run's eval.w2, else the config default)",
    )
    gen.add_argument(
        "--guidance-rescale",
        type=float,
        help="guidance rescale φ in [0, 1] (Lin et al. 2024; default: the run's eval.guidance_rescale, else the "
        "config default)",
    )
    gen.add_argument(
        "--no-original-guidance",
        action="store_true",
        help="plain classifier-free guidance on the expanded prompt (with --guidance-scale)",
    )
    gen.add_argument("--no-expand", action="store_true", help="do not expand the prompt with the PEN")
    gen.add_argument(
        "--rewards", help="comma-separated reward names to score every image with (default: the run's rewards)"
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, help="DDIM steps (default: the run's, else the config default)")
    gen.add_argument(
        "--guidance-scale",
        type=float,
        help="CFG scale with --no-original-guidance (default: the run's, else the config default)",
    )
    gen.add_argument("--eta", type=float, default=0.0, help="DDIM η (default 0: deterministic)")
    gen.add_argument(
        "--out",
        default="grid.png",
        help="PNG grid to write; prompt, expansions, settings and rewards go to a .json beside it",
    )
    gen.set_defaults(func=_generate)

    ev = sub.add_parser(
        "evaluate", help="score runs and models side by side on a prompt set; writes report.md/.html and results.json"
    )
    ev.add_argument(
        "--run",
        action="append",
        default=[],
        help="a run folder (its last checkpoint, PEN and inference settings); repeatable",
    )
    ev.add_argument(
        "--combine",
        nargs=2,
        action="append",
        metavar=("T2I_RUN", "PEN_RUN"),
        help="one entry from two runs: the T2I model of a train.pen=false run with the PEN of a train.t2i=false run "
        "(the paper's decoupled ablation); repeatable",
    )
    ev.add_argument(
        "--model",
        action="append",
        default=[],
        help="a base model (hub id, folder, builtin:NAME): the prompt as given, the config defaults' guidance; "
        "repeatable",
    )
    ev.add_argument(
        "--prompts",
        default="builtin:mini-heldout",
        help="prompt file: text, JSONL, PartiPrompts TSV (file.tsv#Category=Animals) or builtin:NAME",
    )
    ev.add_argument("--images-per-prompt", type=int, default=8)
    ev.add_argument("--rewards", help="comma-separated reward names (default: the first run's rewards)")
    ev.add_argument(
        "--reference",
        help="hypervolume reference point, one value per reward (default: each reward's 10%% quantile over the first "
        "entry's images)",
    )
    ev.add_argument("--seed", type=int, default=1234, help="noise and PEN seed, the same for every entry")
    ev.add_argument("--out", default="report", help="folder for the report")
    ev.set_defaults(func=_evaluate)

    sft = sub.add_parser(
        "sft-pen", help="supervised fine-tuning of a prompt expansion network on (prompt, expansion) pairs"
    )
    sft.add_argument(
        "--data",
        required=True,
        help='JSONL file, one {"prompt": ..., "expansion": ...} per line; or builtin:mini (the mini world grammar)',
    )
    sft.add_argument(
        "--model",
        default="builtin:mini",
        help="causal LM to start from: hub id, local folder or builtin:mini (default)",
    )
    sft.add_argument(
        "--template",
        help="how the prompt is presented: mini, promptist, instruction (the paper's) or a format string with "
        "{prompt}; default: the model's saved template, else instruction",
    )
    sft.add_argument("--out", required=True, help="folder to write the fine-tuned PEN to")
    sft.add_argument("--steps", type=int, default=1000)
    sft.add_argument("--batch-size", type=int, default=32)
    sft.add_argument(
        "--learning-rate", type=float, default=5e-5, help="peak AdamW learning rate (default 5e-5, for pre-trained LMs)"
    )
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument(
        "--work-dir", default="runs/sft-pen", help="checkpoints and log; an interrupted run resumes from here"
    )
    sft.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --work-dir")
    sft.set_defaults(func=_sft_pen)

    mini = sub.add_parser("mini", help="(re)build the embedded mini world's models")
    mini.add_argument("mini_command", choices=["train-t2i", "train-flow", "train-rewards", "train-pen"])
    mini.add_argument("--out", help="where to write the model(s) (default: the package's shipped weights)")
    mini.add_argument(
        "--work-dir", default="runs/mini-train", help="checkpoints and logs; an interrupted run resumes from here"
    )
    mini.add_argument(
        "--steps", type=int, help="training steps (train-t2i: of phase 1, ε); default: the shipped models' settings"
    )
    mini.add_argument("--finetune-steps", type=int, help="train-t2i only: steps of phase 2 (v-prediction fine-tuning)")
    mini.add_argument(
        "--patch-size",
        type=int,
        help="train-flow only: pixels per side of a transformer token, dividing 32 (default 4; 2 costs about 3× "
        "the time a step)",
    )
    mini.add_argument(
        "--layers",
        type=int,
        help="train-flow only: the transformer's joint blocks (default 4; 8 take about 1.4× the time a step)",
    )
    mini.add_argument(
        "--freeze-text-encoder",
        action="store_true",
        help="train-flow only: keep the UNet model's text encoder as it is instead of training it jointly",
    )
    mini.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --work-dir")
    mini.set_defaults(func=_mini)
    return parser


def _print_user_frames(error: BaseException) -> None:
    """The traceback of an exception raised in user code (a ``module:function`` reward), without
    this package's frames: the user needs their own, not ours."""
    import traceback

    package = str(Path(__file__).parent)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(package)]
    print(
        "Traceback (your code):\n"
        + "".join(traceback.format_list(frames))
        + "".join(traceback.format_exception_only(error)),
        file=sys.stderr,
        end="",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar per loaded model is noise
    diffusers.utils.logging.disable_progress_bar()
    try:
        args.func(args)
    except (ConfigError, ParrotError) as err:
        if isinstance(err, RewardError) and err.__cause__ is not None:
            _print_user_frames(err.__cause__)
        print(f"parrot: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parrot: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
