"""A model whose config disagrees with its weights is refused in ONE line on stderr: transformers'
own "LOAD REPORT" table (logged before it raises, from 5.25) never reaches the user around it.
Run as a user runs it, in a subprocess, so that transformers' real log handlers are in play."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.trace.corpora import DOCS, write_txt


def test_config_edited_over_its_weights_is_one_line_on_stderr(tiny_mixtral, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(tiny_mixtral, folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_local_experts"] = 4  # over 8-expert weights
    (folder / "config.json").write_text(json.dumps(config))
    corpus = write_txt(tmp_path / "a.txt", DOCS)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "routelens.cli.main",
            "trace",
            str(folder),
            "--corpus",
            f"web={corpus}",
            "--out",
            str(tmp_path / "t"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and "do not fit its config.json" in lines[0], run.stderr
    assert "LOAD REPORT" not in run.stderr + run.stdout
    assert not (tmp_path / "t").exists()
