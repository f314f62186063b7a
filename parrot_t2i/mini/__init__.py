"""The embedded mini world: procedural scenes, a small text-to-image model, a prompt expansion
network, four reward models and an attribute checker, all trained by the project's own scripts
and shipped as safetensors under ``weights/``. See docs/MINI_WORLD.md.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParrotError

WEIGHTS = Path(__file__).parent / "weights"
COMPONENTS = ("t2i", "flow", "pen", "alignment", "preference", "checker")


def weights_path(component: str) -> Path:
    """Folder of a shipped mini-world model; a clear error if the package was installed without it."""
    if component not in COMPONENTS:
        raise ParrotError(f"unknown mini-world component {component!r} (known: {', '.join(COMPONENTS)})")
    path = WEIGHTS / component
    if not path.is_dir():
        raise ParrotError(
            f"the mini-world {component} weights are missing from {path}; reinstall parrot-t2i, "
            "or rebuild them with `parrot mini "
            f"train-{'rewards' if component in ('alignment', 'preference', 'checker') else component}`"
        )
    return path
