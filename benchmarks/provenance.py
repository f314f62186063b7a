"""What every results JSON records about the code it was measured on."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """The commit the benchmark runs on, with "+dirty" when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    git = lambda *cmd: subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
