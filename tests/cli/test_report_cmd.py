"""`routelens report`, driven through typer's CliRunner: inputs by name (--analysis, --cache,
--balance) and the old repeated --json, layers chosen, user errors as one line with exit code 2."""

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
    (root / "analysis.json").write_text(
        json.dumps({k: analysis[k] for k in ("meta", "locality", "locality_baseline", "distribution")})
    )
    (root / "sim.json").write_text(json.dumps({k: v for k, v in extras(["0", "7"], 8, 2).items() if k == "balance"}))
    sim = extras(["0", "7"], 8, 2)
    meta = {"tokens": trace.num_tokens, "num_experts": 8, "top_k": 2}
    # As `routelens simulate all` writes them: both results in one file, each with its own meta.
    both = {
        "cache": sim["cache"],
        "cache_meta": meta,
        "balance": sim["balance"],
        "balance_meta": {"tokens": trace.num_tokens},
    }
    (root / "all.json").write_text(json.dumps(both))
    (root / "cache.json").write_text(json.dumps({"cache": sim["cache"], "cache_meta": meta}))
    (root / "other_cache.json").write_text(json.dumps({"cache": sim["cache"], "cache_meta": {**meta, "tokens": 5}}))
    return root


def sections(path) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', path.read_text())


def test_report_from_saved_json_files(setup, tmp_path):
    out = tmp_path / "r.html"
    args = [
        "report",
        str(setup / "trace"),
        "-o",
        str(out),
        "--json",
        str(setup / "analysis.json"),
        "--json",
        str(setup / "sim.json"),
        "--layers",
        "7",
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "computing" not in result.output  # reused, not recomputed
    assert sections(out) == ["summary", "distribution", "locality", "token-view", "balance"]
    text = out.read_text()
    assert '<div class="hd">layer 7</div>' in text and '<div class="hd">layer 0</div>' not in text
    assert sorted(p.suffix for p in (tmp_path / "r_figures").iterdir()).count(".png") == 3


def report(setup, out, *inputs: str) -> str:
    """Run `routelens report` on the fixture's trace with `inputs` (flag, file of the fixture, ...) and
    `--layers 7`; return its output, once it has exited with 0."""
    args = ["report", str(setup / "trace"), "-o", str(out), "--layers", "7", "-q"]
    for flag, name in zip(inputs[::2], inputs[1::2]):
        args += [flag, str(setup / name)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_report_from_inputs_by_name(setup, tmp_path):
    out = tmp_path / "r.html"
    output = report(setup, out, "--analysis", "analysis.json", "--cache", "cache.json", "--balance", "sim.json")
    assert "computing" not in output
    assert sections(out) == ["summary", "distribution", "locality", "token-view", "cache", "balance"]


@pytest.mark.slow
def test_one_simulate_all_file_feeds_cache_and_balance(setup, tmp_path):
    out = tmp_path / "r.html"
    report(setup, out, "--analysis", "analysis.json", "--cache", "all.json", "--balance", "all.json")
    assert sections(out)[-2:] == ["cache", "balance"]
    # --cache takes only the cache keys: without --balance, no balance section from the same file.
    report(setup, out, "--analysis", "analysis.json", "--cache", "all.json")
    assert sections(out)[-1] == "cache" and "balance" not in sections(out)


def test_named_and_old_inputs_give_the_same_report(setup, tmp_path):
    new, old = tmp_path / "new.html", tmp_path / "old.html"
    report(setup, new, "--analysis", "analysis.json", "--balance", "sim.json")
    report(setup, old, "--json", "analysis.json", "--json", "sim.json")
    stamp = re.compile(r"on \d{4}-\d{2}-\d{2} \d{2}:\d{2}")
    assert stamp.sub("", new.read_text()) == stamp.sub("", old.read_text())


@pytest.mark.slow
def test_report_computes_the_analysis_when_not_given(setup, tmp_path):
    out = tmp_path / "sub" / "r.html"
    result = CliRunner().invoke(
        app, ["report", str(setup / "trace"), "-o", str(out), "--json", str(setup / "sim.json"), "-q"]
    )
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
        (["--analysis", "missing.json"], "--analysis missing.json: no such file; write it with `routelens analyze"),
        (["--analysis", "other.json"], "num_experts=16 but the trace"),
        (["--cache", "list.json"], "--cache list.json holds a list"),
        (
            ["--cache", "other.json"],
            "--cache other.json holds no `cache` result; pass the file `routelens simulate cache",
        ),
        (
            ["--balance", "missing.json"],
            "--balance missing.json: no such file; write it with `routelens simulate balance",
        ),
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


def test_results_of_another_trace_are_refused(setup, tmp_path):
    args = [
        "report",
        str(setup / "trace"),
        "-o",
        str(tmp_path / "r.html"),
        "--analysis",
        str(setup / "analysis.json"),
        "--cache",
        str(setup / "other_cache.json"),
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--cache" in result.output and "tokens=5 but the trace" in result.output
    assert not (tmp_path / "r.html").exists()


def test_help_has_examples():
    result = CliRunner().invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    assert "routelens report trace/ -o report.html" in result.output and "--layers" in result.output
    for flag in ("--analysis", "--cache", "--balance", "--json"):
        assert flag in result.output
    assert "Old spelling" in result.output
