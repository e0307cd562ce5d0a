"""`routelens info` summarises a trace without importing torch or transformers (checked in a fresh
interpreter, with a control that does import them so that the check itself can fail)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import routelens
from tests.trace.corpora import DOCS, write_txt

PROBE = """
import json, sys
from typer.testing import CliRunner
from routelens.cli.main import app
{extra}
result = CliRunner().invoke(app, ["info", sys.argv[1], "--json"])
assert result.exit_code == 0, result.output
print(json.dumps({{"loaded": [m for m in ("torch", "transformers") if m in sys.modules],
                  "info": json.loads(result.output)}}))
"""


def run_probe(path, extra: str = "") -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(extra=extra), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def traced(tiny_mixtral, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("info")
    corpus = write_txt(tmp / "a.txt", DOCS)
    return routelens.trace(str(tiny_mixtral), [f"web={corpus}"], tmp / "t", progress=False)


def test_info_imports_no_torch(traced):
    got = run_probe(traced.path)
    assert got["loaded"] == []
    assert got["info"]["tokens"] == traced.num_tokens and got["info"]["num_experts"] == 8


def test_the_probe_sees_torch_when_it_is_imported(traced):
    assert "torch" in run_probe(traced.path, extra="import routelens.trace.compute")["loaded"]
