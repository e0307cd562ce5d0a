"""`routelens train` after a real kill (SIGKILL of the process, not an exception inside it): the
resumed run writes the same `training.json` as an uninterrupted one, every field compared but the
wall-clock ones; and a checkpoint is never unpickled: a crafted `trainer_state.pt` or
`optimizer.pt` that would run code on load is refused in one line with exit code 2, and the code
does not run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from routelens.training.train import WALL_CLOCK_FIELDS
from tests.cli.conftest import TRAIN_ARGS
from tests.training.test_train import write_micro_corpus

ARGS = [a if a != "4" or i != TRAIN_ARGS.index("--steps") + 1 else "8" for i, a in enumerate(TRAIN_ARGS)]
ARGS += ["--num-experts", "4", "--num-layers", "2"]


def train_cmd(specs: list[str], out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "routelens.cli.main",
        "train",
        *sum((["--corpus", s] for s in specs), []),
        "--out",
        str(out),
        *ARGS,
    ]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(corpus specs, uninterrupted run, run killed after its step-4 checkpoint and resumed, a copy
    of the killed run's checkpoints)."""
    root = tmp_path_factory.mktemp("resume")
    specs = write_micro_corpus(root / "corpus")
    full = root / "full"
    done = run(train_cmd(specs, full))
    assert done.returncode == 0, done.stderr[-2000:]

    killed = root / "killed"
    proc = subprocess.Popen(train_cmd(specs, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "step-000004"
    deadline = time.monotonic() + 600
    while not (ckpt / "trainer_state.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "training.json").exists(), "the run finished before it could be killed"
    saved = root / "saved-checkpoints"
    shutil.copytree(killed / "checkpoints", saved)
    resumed = run(train_cmd(specs, killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return specs, full, killed, saved


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_training_json(runs):
    _, full, resumed, _ = runs
    a, b = (json.loads((p / "training.json").read_text()) for p in (full, resumed))
    assert set(WALL_CLOCK_FIELDS) <= a.keys()
    for field in WALL_CLOCK_FIELDS:
        assert a.pop(field) > 0 and b.pop(field) > 0
    assert a == b  # config, steps, tokens, final_loss, val, history, checkpoints: all of it
    assert a["steps"] == 8 and len(a["history"]) == 8
    for name in ("model.safetensors", "config.json"):
        assert (full / name).read_bytes() == (resumed / name).read_bytes()


class RunsCode:
    """Unpickling this runs `touch MARKER` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["trainer_state.pt", "optimizer.pt"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(runs, tmp_path, name):
    specs, _, _, saved = runs
    out = tmp_path / "run"
    shutil.copytree(saved, out / "checkpoints")
    latest = sorted((out / "checkpoints").iterdir())[-1]
    marker = tmp_path / "PWNED"
    (latest / name).write_bytes(pickle.dumps({"step": RunsCode(marker), "state": RunsCode(marker)}))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run(train_cmd(specs, out))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert name.split(".")[0].replace("_", " ").replace("trainer state", "trainer state") in lines[0].replace("_", " ")
    assert "delete" in lines[0] and str(latest) in lines[0]
    assert not marker.exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
