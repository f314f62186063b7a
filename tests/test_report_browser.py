"""report.html in a real headless browser: every image loads, the page logs no console error, and a
screenshot is kept (in $PARROT_ARTIFACTS when CI sets it). Needs Debian's chromium, which .ci/run
installs; skipped where it is missing."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from parrot_t2i.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium binary (.ci/run installs Debian's)")

# Appended to a copy of the page: once everything has loaded, the title counts the images that decoded.
PROBE = (
    "<script>addEventListener('load', () => { const all = [...document.images]; "
    "document.title = `images ${all.filter(i => i.complete && i.naturalWidth > 0).length}/${all.length}`; });</script>"
)


def chromium(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=600, check=False
    )  # a hang guard only


def test_report_renders_in_a_real_browser(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model",
                "builtin:tiny",
                "--rewards",
                "brightness,colorfulness",
                "--prompts",
                str(prompts),
                "--images-per-prompt",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = (out / "report.html").read_text()
    images = len(re.findall(r"<img ", page))
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))

    loaded = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert f"<title>images {images}/{images}</title>" in loaded.stdout, loaded.stdout[:500]
    console = [
        line for line in loaded.stderr.splitlines() if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    assert not console, console

    shots = Path(os.environ.get("PARROT_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "report.png"
    taken = chromium("--window-size=1280,1600", f"--screenshot={shot}", (out / "report.html").as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
