"""`routelens compare A B` through the CLI: tables, the JSON keys, refusals, and the report section."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.analysis.test_compare import DOMAINS, LENGTHS, A, B, planted_probs, write_pair_trace

runner = CliRunner()


@pytest.fixture
def pair(tmp_path):
    a = write_pair_trace(tmp_path / "a", A, LENGTHS, DOMAINS, probs=planted_probs(A, close={(1, 0), (3, 1)}))
    return a, write_pair_trace(tmp_path / "b", B, LENGTHS, DOMAINS)


def test_compare_json_keys_and_table(pair, tmp_path):
    out = tmp_path / "compare.json"
    result = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "Routing agreement" in result.output and "Flip rate (top-k set differs)" in result.output
    data = json.loads(out.read_text())
    assert {"agreement", "any_layer_differs", "by_margin"} <= set(data)
    assert set(data["agreement"]) == {"x", "y", "all"} and set(data["agreement"]["x"]["0"]) == {
        "first",
        "overlap",
        "set_equal",
    }
    assert data["any_layer_differs"]["all"] == pytest.approx(2 / 5)
    stdout = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "--json", "-", "-q"])
    assert json.loads(stdout.output)["agreement"] == data["agreement"]


def test_misaligned_traces_exit_2_in_one_line(pair, tmp_path):
    other = write_pair_trace(tmp_path / "c", B, LENGTHS, DOMAINS, token_id=[0, 5, 0, 0, 0])
    result = runner.invoke(app, ["compare", str(pair[0]), str(other), "-q"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "differ in token id" in lines[0]


@pytest.mark.slow
def test_report_with_a_comparison(pair, tmp_path):
    out = tmp_path / "compare.json"
    assert runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "--json", str(out), "-q"]).exit_code == 0
    html = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(pair[0]), "--compare", str(out), "-o", str(html), "-q"])
    assert result.exit_code == 0, result.output
    page = html.read_text()
    assert '<section id="compare">' in page and "66.7% / 83.3% / 66.7%" in page  # domain x, layer 0
    assert len(list((tmp_path / "r_figures").glob("*-compare-margin.png"))) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agreement": {}, "meta": {"layers": [0, 1, 2]}}))
    result = runner.invoke(app, ["report", str(pair[0]), "--compare", str(bad), "-o", str(html), "-q"])
    assert result.exit_code == 2 and "compares layers [0, 1, 2]" in result.output
