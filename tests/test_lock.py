"""`output_lock`: one run per output; the second is refused naming the holder; a dead holder's
lock is taken over; the lock survives the output folder being replaced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from routelens.errors import RoutelensError
from routelens.lock import OutputLockedError, lock_path, output_lock

HOLD = """
import sys, time
from routelens.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(out):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_run_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "trace"
    child = hold_in_child(out)
    try:
        with pytest.raises(OutputLockedError, match=rf"in use by process {child.pid}\b") as info:
            with output_lock(out, what="trace"):
                pass
        assert "\n" not in str(info.value) and "another location" in str(info.value)
        assert isinstance(info.value, RoutelensError)
    finally:
        child.kill()
        child.wait()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "trace"
    child = hold_in_child(out)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_path(out).exists()  # the dead run left its file behind
    with output_lock(out) as path:
        assert path.read_text() == str(os.getpid())
    assert not lock_path(out).exists()


def test_lock_is_beside_the_output_and_survives_its_replacement(tmp_path):
    out = tmp_path / "trace"
    out.mkdir()
    (out / "shard.parquet").write_text("x")
    with output_lock(out) as path:
        assert path.parent == tmp_path and path.name == ".trace.routelens-lock"
        shutil.rmtree(out)  # what --overwrite does to the folder
        with pytest.raises(OutputLockedError):
            with output_lock(out):
                pass
    with output_lock(out):  # released on exit
        pass


def test_sequential_runs_and_exceptions_release(tmp_path):
    out = tmp_path / "report.html"
    with pytest.raises(ValueError):
        with output_lock(out):
            raise ValueError("boom")
    t0 = time.monotonic()
    with output_lock(out):
        pass
    assert time.monotonic() - t0 < 5


def test_unwritable_location_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RoutelensError, match="writable location") as info:
        with output_lock(blocker / "trace"):
            pass
    assert "\n" not in str(info.value)
