"""The report opened in headless Chromium (Debian's `chromium`, started here): it renders (the
screenshot is not blank), every figure is in the DOM, and the console stays silent.
Skipped where chromium is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from tests.report.test_build import EXPECTED_FIGURES, SECTIONS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    # The report has no script, so any console message at all is a fault.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_detector_catches_a_console_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>notDefined();</script></body></html>")
    run = chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("notDefined" in line for line in console_errors(run.stderr))


def test_report_renders_in_chromium(built, tmp_path):
    shot = tmp_path / "shot.png"
    run = chromium(built.html_path, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1280,2200")
    assert shot.exists(), run.stderr[-2000:]
    assert console_errors(run.stderr) == []
    pixels = mpimg.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2200, 1280)
    assert pixels.std() > 0.05  # not blank
    assert (pixels.mean(axis=2) < 0.3).mean() > 0.01  # dark header band and text are drawn

    dom = chromium(built.html_path, tmp_path / "p2", "--dump-dom")
    assert console_errors(dom.stderr) == []
    html = dom.stdout
    assert re.findall(r'<section id="([^"]+)">', html) == SECTIONS
    figures = re.findall(r'<figure class="fig[^"]*"><svg\b', html)
    assert len(figures) == html.count("<svg") == len(EXPECTED_FIGURES)
    assert html.count('class="tok') == built.text.count('class="tok')  # every token span survived parsing
