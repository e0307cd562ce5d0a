"""`routelens report`, driven through typer's CliRunner: saved analyses merged, layers chosen,
user errors as one line with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from tests.report.conftest import extras, make_trace


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from routelens.analysis import analyze

    root = tmp_path_factory.mktemp("cli")
    trace = make_trace(root / "trace", layers=(0, 7), domains=("code",), first_dist={})
    analysis = analyze(trace, bootstrap=0, progress=False)
    (root / "analysis.json").write_text(json.dumps({k: analysis[k] for k in ("meta", "locality", "locality_baseline", "distribution")}))
    (root / "sim.json").write_text(json.dumps({k: v for k, v in extras(["0", "7"], 8, 2).items() if k == "balance"}))
    return root


def sections(path) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', path.read_text())


def test_report_from_saved_json_files(setup, tmp_path):
    out = tmp_path / "r.html"
    args = ["report", str(setup / "trace"), "-o", str(out), "--json", str(setup / "analysis.json"),
            "--json", str(setup / "sim.json"), "--layers", "7", "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "computing" not in result.output  # reused, not recomputed
    assert sections(out) == ["summary", "distribution", "locality", "token-view", "balance"]
    text = out.read_text()
    assert '<div class="hd">layer 7</div>' in text and '<div class="hd">layer 0</div>' not in text
    assert sorted(p.suffix for p in (tmp_path / "r_figures").iterdir()).count(".png") == 3


def test_report_computes_the_analysis_when_not_given(setup, tmp_path):
    out = tmp_path / "sub" / "r.html"
    result = CliRunner().invoke(app, ["report", str(setup / "trace"), "-o", str(out), "--json", str(setup / "sim.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert "computing the analysis" in result.output
    assert {"distribution", "locality", "vocabulary", "coactivation", "balance"} <= set(sections(out))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layers", "0,x"], "--layers '0,x' is not a comma-separated list"),
        (["--layers", "3"], "--layers 3: not a MoE layer of this trace; choose among 0,7"),
        (["--json", "missing.json"], "missing.json: no such file"),
        (["--json", "bad.json"], "bad.json is not valid JSON"),
        (["--json", "list.json"], "holds a list, not an analysis object"),
        (["--json", "other.json"], "num_experts=16 but the trace"),
    ],
)
def test_user_errors_exit_2(setup, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text(json.dumps({"meta": {"num_experts": 16}}))
    result = CliRunner().invoke(app, ["report", str(setup / "trace"), "-o", "r.html", "-q", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


def test_help_has_examples():
    result = CliRunner().invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    assert "routelens report trace/ -o report.html" in result.output and "--layers" in result.output
