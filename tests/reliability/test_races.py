"""Two runs into one output at once: the second is refused in one line naming the first's PID
(exit code 2) and the first's output is whole; for `report` (page and figures) and `train`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from routelens.lock import lock_path, output_lock
from tests.report.conftest import make_trace

CLI = [sys.executable, "-m", "routelens.cli.main"]


def wait_for_lock(output: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not lock_path(output).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the first run never took its lock"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return make_trace(
        tmp_path_factory.mktemp("race") / "trace", layers=(0, 3), domains=("code", "prose"), first_dist={}
    ).path


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    return lines[0]


@pytest.mark.slow
def test_two_reports_into_one_page(trace, tmp_path):
    out = tmp_path / "r.html"
    first = subprocess.Popen(
        [*CLI, "report", str(trace), "-o", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_lock(out, first)
    second = subprocess.run(
        [*CLI, "report", str(trace), "-o", str(out), "-q"], capture_output=True, text=True, timeout=300
    )
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2
    line = one_line(second)
    assert f"process {first.pid}" in line and str(out) in line and "wait" in line
    text = out.read_text(encoding="utf-8")
    assert text.rstrip().endswith("</html>") and '<section id="distribution">' in text
    assert not lock_path(out).exists()  # released at the end


@pytest.mark.slow
def test_report_refused_while_another_process_holds_the_lock_and_taken_over_after_it_dies(trace, tmp_path):
    out = tmp_path / "r.html"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from routelens.lock import output_lock\n"
                f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(600)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    refused = subprocess.run(
        [*CLI, "report", str(trace), "-o", str(out), "-q"], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and f"process {holder.pid}" in one_line(refused)
    assert not out.exists()
    holder.kill()
    holder.wait()
    assert lock_path(out).exists()  # a dead holder leaves its sidecar: the next run takes it over
    taken = subprocess.run(
        [*CLI, "report", str(trace), "-o", str(out), "-q"], capture_output=True, text=True, timeout=300
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert out.is_file()


@pytest.mark.parametrize("command", ["train", "corpus builtin", "upcycle"])
def test_other_writers_refuse_a_locked_output(tmp_path, command):
    out = tmp_path / "out"
    args = {
        "train": ["train", "--corpus", f"a={tmp_path / 'a.txt'}", "--out", str(out), "--steps", "1", "-q"],
        "corpus builtin": ["corpus", "builtin", "--out", str(out), "--size-kb", "1"],
        "upcycle": ["upcycle", str(tmp_path / "dense"), "--num-experts", "2", "--top-k", "1", "--out", str(out)],
    }[command]
    (tmp_path / "a.txt").write_text("some words\n\nmore words\n")
    with output_lock(out):
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"process {os.getpid()}" in one_line(result)
    assert not out.exists()
