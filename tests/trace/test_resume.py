"""A trace killed mid-run resumes, from the command line, to exactly the rows of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

import routelens
from tests.trace.corpora import DOCS, write_txt


def _trace_cmd(model, corpus, out):
    return [
        sys.executable,
        "-m",
        "routelens.cli.main",
        "trace",
        str(model),
        "--corpus",
        f"web={corpus}",
        "--out",
        str(out),
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--shard-tokens",
        "64",
        "--quiet",
    ]


@pytest.mark.slow
def test_killed_trace_resumes_to_the_same_rows(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "a.txt", [f"{i} " + DOCS[i % len(DOCS)] for i in range(300)])
    routelens.trace(
        str(tiny_mixtral),
        [f"web={corpus}"],
        tmp_path / "full",
        seq_len=32,
        batch_size=2,
        shard_tokens=64,
        progress=False,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_trace_cmd(tiny_mixtral, corpus, tmp_path / "cut"), env=env, stderr=subprocess.DEVNULL)
    shards = tmp_path / "cut" / "shards"
    deadline = time.time() + 120
    while not (shards / "part-00003.parquet").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["complete"] is False, "the run finished before it could be killed"
    with pytest.raises(routelens.RoutelensError, match="incomplete"):
        routelens.open_trace(tmp_path / "cut")
    again = subprocess.run(_trace_cmd(tiny_mixtral, corpus, tmp_path / "cut"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    a = ds.dataset(tmp_path / "full" / "shards").to_table().to_pylist()
    b = ds.dataset(tmp_path / "cut" / "shards").to_table().to_pylist()
    assert len(a) == len(b) and a == b
