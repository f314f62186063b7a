"""What every results JSON records about the code it was measured on."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def code_version() -> str:
    """The commit of the ``parrot_t2i`` package the benchmark imported, with "+dirty" when tracked files
    differ from it: read once, when first asked, so that commits made while a long study runs do not
    relabel its later rows. The package's tree, not this script's: run from a second worktree, a
    script imports the editable install's package unless PYTHONPATH names the worktree."""
    import parrot_t2i

    root = Path(parrot_t2i.__file__).resolve().parent.parent
    git = lambda *cmd: subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
