"""Which code made a result: the checkout's commit, "+dirty" for edits, the version outside a checkout."""

import subprocess

from parrot_t2i import __version__
from parrot_t2i.provenance import code_version


def git(root, *cmd):
    return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_code_version_names_the_commit_and_marks_edits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git(repo, "rev-parse", "--short", "HEAD")
    assert code_version.__wrapped__(repo) == commit
    (repo / "untracked.txt").write_text("not code\n")
    assert code_version.__wrapped__(repo) == commit  # untracked files do not count
    (repo / "a.py").write_text("x = 2\n")
    assert code_version.__wrapped__(repo) == commit + "+dirty"
    # A folder inside some other project's checkout (a venv's site-packages) is not a checkout of ours.
    (repo / "site-packages").mkdir()
    assert code_version.__wrapped__(repo / "site-packages") == f"parrot-t2i {__version__}"
