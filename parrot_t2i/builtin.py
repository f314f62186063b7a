"""Every ``builtin:`` name, resolved in one place.

- models: ``builtin:mini`` (the shipped mini-world T2I model and PEN) and ``builtin:tiny`` (a tiny
  random SD model, built into the cache on first use);
- prompt sets: ``builtin:mini-train`` and ``builtin:mini-heldout`` (parrot_t2i/mini/prompts/).

A new built-in (a model, a prompt set) is one entry here; ``T2IPolicy.from_pretrained``,
``PromptExpander.from_pretrained`` and ``read_prompt_file`` all come through this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .errors import ParrotError

PREFIX = "builtin:"
PROMPT_SETS = Path(__file__).parent / "mini" / "prompts"
MINI_WORLD_MODELS = ("builtin:mini", "builtin:mini-flow")  # they draw the mini world: its PEN, words, checker
MINI_WORLD_MARKER = "mini_world.json"  # written beside a model `parrot mini` trains (mini/nets.write_model_card)
Kind = Literal["t2i", "pen"]


def _mini(component: str) -> Callable[[], Path]:
    def shipped() -> Path:
        from .mini import weights_path

        return weights_path(component)

    return shipped


def _tiny() -> Path:
    from .tiny import builtin_path

    return builtin_path("tiny")


MODELS: dict[Kind, dict[str, Callable[[], Path]]] = {
    "t2i": {"mini": _mini("t2i"), "mini-flow": _mini("flow"), "tiny": _tiny},
    "pen": {"mini": _mini("pen")},
}


def resolve(name_or_path: str, kind: Kind) -> str:
    """The folder of built-in model ``name_or_path`` of ``kind`` (shipped, or built on first use);
    hub ids and paths pass through unchanged."""
    if not name_or_path.startswith(PREFIX):
        return name_or_path
    name = name_or_path.removeprefix(PREFIX)
    if name not in MODELS[kind]:
        known = ", ".join(PREFIX + n for n in MODELS[kind])
        what = "model" if kind == "t2i" else "PEN"
        raise ParrotError(f"unknown built-in {what} {name_or_path!r} (built-ins: {known})")
    return str(MODELS[kind][name]())


def is_mini_world_model(name_or_path: str) -> bool:
    """Whether a model draws the mini world (so its PEN, vocabulary and attribute checker apply): a
    built-in mini model, or a folder ``parrot mini`` wrote, e.g. a retrained model under test."""
    return name_or_path in MINI_WORLD_MODELS or (Path(name_or_path) / MINI_WORLD_MARKER).is_file()


def prompt_sets() -> list[str]:
    return sorted(PREFIX + p.stem for p in PROMPT_SETS.glob("*.txt"))


def prompt_set(spec: str) -> Path | None:
    """The file of packaged prompt set ``spec`` (``builtin:NAME``); None when there is none."""
    path = PROMPT_SETS / f"{spec.removeprefix(PREFIX)}.txt"
    return path if path.is_file() else None
