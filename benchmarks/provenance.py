"""What every results JSON records about the code it was measured on."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def code_version() -> str:
    """The commit the benchmark runs on, with "+dirty" when tracked files differ from it: read once,
    when first asked, so that commits made while a long study runs do not relabel its later rows."""
    root = Path(__file__).resolve().parent.parent
    git = lambda *cmd: subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
