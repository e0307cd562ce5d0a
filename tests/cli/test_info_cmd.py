"""`routelens info --json`: FILE writes the summary, `-` and the bare `--json` of earlier versions
print it to stdout."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.store import open_trace
from routelens.synthetic import SyntheticSpec, write_synthetic_trace
from routelens.trace import summarize


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    spec = SyntheticSpec(num_docs=4, doc_len=30, layers=(0, 2), num_experts=8, top_k=2, seed=0)
    return write_synthetic_trace(tmp_path_factory.mktemp("info") / "t", spec)


@pytest.mark.parametrize("argv", [["--json"], ["--json", "-"]], ids=["bare", "dash"])
def test_json_to_stdout(trace, argv):
    result = CliRunner().invoke(app, ["info", str(trace), *argv])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tokens"] == open_trace(trace).num_tokens == 2 * 4 * 30  # 4 documents in each of 2 domains
    assert info["num_experts"] == 8 and info["moe_layers"] == [0, 2]


def test_json_file(trace, tmp_path):
    out = tmp_path / "info.json"
    result = CliRunner().invoke(app, ["info", str(trace), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and json.loads(out.read_text()) == json.loads(
        CliRunner().invoke(app, ["info", str(trace), "--json"]).stdout
    )
    assert out.read_text() == json.dumps(summarize(trace), indent=2) + "\n"  # the bytes of earlier versions


def test_json_file_in_a_folder_place_is_one_line_exit_2(trace, tmp_path):
    result = CliRunner().invoke(app, ["info", str(trace), "--json", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "is a directory" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_json_file_in_a_new_folder_is_written_there(trace, tmp_path):
    target = tmp_path / "missing" / "info.json"  # the folder is made, as for every output
    result = CliRunner().invoke(app, ["info", str(trace), "--json", str(target)])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["tokens"] == summarize(trace)["tokens"]
