"""docs/replay.md's end-to-end example runs as written (rollout -> import -> replay -> a training step)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "replay.md"


def test_the_replay_workflow_runs_as_documented(tiny_mixtral, tmp_path, monkeypatch):
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
    assert blocks and all(re.search(r"^assert ", b, flags=re.M) for b in blocks)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__replay_doc__", "model": str(tiny_mixtral)}
    for code in blocks:
        exec(compile(code, "docs/replay.md", "exec"), namespace)
    assert (tmp_path / "replay.json").is_file() and (tmp_path / "rollout" / "manifest.json").is_file()
