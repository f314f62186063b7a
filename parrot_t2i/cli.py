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
