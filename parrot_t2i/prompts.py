"""Prompt files: one prompt per line, or a packaged set named ``builtin:NAME``."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

PACKAGED = Path(__file__).parent / "mini" / "prompts"


def packaged_sets() -> list[str]:
    return sorted(f"builtin:{p.stem}" for p in PACKAGED.glob("*.txt"))


def read_prompt_file(spec: str, key: str) -> list[str]:
    """Prompts of file ``spec`` (blank lines and ``#`` comments skipped); ``key`` names the setting in errors."""
    if spec.startswith("builtin:"):
        path = PACKAGED / f"{spec.removeprefix('builtin:')}.txt"
        if not path.is_file():
            raise ConfigError(f"{key}: unknown prompt set {spec!r} (packaged: {', '.join(packaged_sets())})")
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{key} {spec!r} does not exist")
    lines = [line.strip() for line in path.read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ConfigError(f"{key} {spec!r} holds no prompts")
    return prompts
