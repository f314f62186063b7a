"""Which code made a result: recorded in every run's ``summary.json`` and every benchmark's JSON."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def code_version(root: Path = PACKAGE_ROOT) -> str:
    """The commit of the checkout ``root`` (by default the one this ``parrot_t2i`` package was
    imported from), with "+dirty" when tracked files differ from it; the package version when the
    package is not a git checkout of its own (installed from a wheel). Read once, when first asked,
    so that commits made while a long study runs do not relabel its later rows. A script run from a
    second worktree imports the editable install's package unless PYTHONPATH names the worktree."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root.resolve():  # not a checkout, or one of some other project
        from . import __version__  # here, not at the top: the package imports this module while it loads

        return f"parrot-t2i {__version__}"
    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
