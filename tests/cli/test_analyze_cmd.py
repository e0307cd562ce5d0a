"""The `routelens analyze` and `routelens saturation` commands, driven through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens.cli.main import app
from routelens.synthetic import SyntheticSpec, write_synthetic_trace
from tests.analysis import test_pos

planted_result = test_pos.planted_result  # a fixture: the POS result of a planted trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = np.array([0.65, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
    spec = SyntheticSpec(
        num_docs=20,
        doc_len=40,
        layers=(0, 2, 5),
        num_experts=8,
        top_k=2,
        domains=("web", "math"),
        first_dist={"math": p},
        repeat=0.9,
        seed=0,
    )
    return write_synthetic_trace(tmp_path_factory.mktemp("cli") / "trace", spec)


def test_analyze_prints_tables_and_writes_json(trace, tmp_path):
    out = tmp_path / "analysis.json"
    result = CliRunner().invoke(
        app, ["analyze", str(trace), "--json", str(out), "--bootstrap", "30", "--min-count", "3", "-q"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["meta"]["params"]["bootstrap"] == 30 and data["meta"]["params"]["min_count"] == 3
    assert "Positional locality" in result.output and "permuted (all)" in result.output
    assert "46.4%" in result.output  # the random `any` baseline for 2 of 8
    first = data["locality"]["math"]["0"]["first"]
    assert f"{100 * first:.1f}%" in result.output  # table cells are the JSON's numbers
    assert "math" in result.output and "0.650" not in result.output  # shares pooled over both choices
    # the math domain's planted expert 0 is the most used expert it reports
    math_row = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("math"))
    assert ": 0)" in math_row.split("│")[2]


def test_analyze_user_errors_exit_2(tmp_path, trace):
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no routelens trace" in result.output
    result = CliRunner().invoke(app, ["analyze", str(trace), "--max-distance", "0", "-q"])
    assert result.exit_code == 2 and "max_distance=0" in result.output


def test_saturation_command(trace, tmp_path):
    out = tmp_path / "sat.json"
    result = CliRunner().invoke(app, ["saturation", str(trace), str(trace), "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["topk"]["5"] == [1.0, 1.0]
    assert "100.0% (100.0%)" in result.output


def test_json_dash_writes_the_result_alone_to_stdout(trace, tmp_path):
    runner = CliRunner()
    to_file = tmp_path / "a.json"
    assert runner.invoke(app, ["analyze", str(trace), "--bootstrap", "0", "--json", str(to_file), "-q"]).exit_code == 0
    result = runner.invoke(app, ["analyze", str(trace), "--bootstrap", "0", "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(to_file.read_text())  # no table around it
    assert not (tmp_path / "-").exists()
    sat = runner.invoke(app, ["saturation", str(trace), str(trace), "--json", "-", "-q"])
    assert sat.exit_code == 0 and json.loads(sat.stdout)["topk"]["5"] == [1.0, 1.0]


def test_terminal_summary_shows_the_planted_expert_and_the_probe(planted_result, capsys):
    from routelens.cli.analyze_cmd import _print_pos
    from routelens.cli.common import console

    with console.capture() as cap:
        _print_pos(planted_result, ["0", "3", "7"])
    text = cap.get()
    punct = next(line for line in text.splitlines() if "PUNCT" in line)
    assert "e5 100.0%*" in punct  # layer 3's plant, significant
    assert f"accuracy {100 * planted_result['probe']['accuracy']:.1f}%" in text
    assert "best single layer 3" in text and "most needed layer 3" in text


def test_saturation_of_traces_of_different_text_exits_2(tmp_path):
    from routelens.store.reader import TraceChunk
    from tests.analysis.planted import make_chunk, random_experts, write_trace

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, 200).astype(np.int32)
    final = make_chunk([100, 100], random_experts(200, 2, 8, 2, rng), token_id=tokens)
    other = TraceChunk(**{**vars(final), "token_id": np.roll(tokens, 1)})  # the same rows, another text
    a, b = (
        write_trace(tmp_path / "a", other, E=8, layers=(0, 1)),
        write_trace(tmp_path / "b", final, E=8, layers=(0, 1)),
    )
    result = CliRunner().invoke(app, ["saturation", str(a), str(b), "-q"])
    assert result.exit_code == 2 and "different tokens at doc_id" in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
    ok = CliRunner().invoke(app, ["saturation", str(b), str(b), "-q"])
    assert ok.exit_code == 0 and "independent routing at the same expert loads" in ok.output


def test_pos_options_reach_the_analysis(tmp_path):
    from tests.analysis.pos_planted import planted_words, random_routing, write_pos_trace

    rows = planted_words(40, 8, ["NOUN", "PUNCT"], seed=1)
    experts = random_routing(len(rows["doc_id"]), 2, 8, 2, np.random.default_rng(0))
    path = write_pos_trace(tmp_path / "pos", rows, experts, (0, 1), 8)
    out = tmp_path / "a.json"
    args = [
        "analyze",
        str(path),
        "--pos",
        "--correction",
        "holm",
        "--alpha",
        "0.01",
        "--min-words",
        "1000",
        "--bootstrap",
        "0",
        "--json",
        str(out),
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tests = json.loads(out.read_text())["pos"]["tests"]
    assert tests == {**tests, "correction": "holm", "alpha": 0.01, "min_words": 1000, "family": 0, "significant": 0}
    bad = CliRunner().invoke(app, ["analyze", str(path), "--pos", "--correction", "bonferroni", "-q"])
    assert bad.exit_code == 2 and "bonferroni" in bad.output


def test_locality_null_option_reaches_the_analysis(tmp_path):
    """`--locality-null shuffled` gives the shuffled control (its name in the JSON), exact by default."""
    import json

    from typer.testing import CliRunner

    from routelens.cli.main import app
    from routelens.synthetic import SyntheticSpec, write_synthetic_trace

    trace = write_synthetic_trace(tmp_path / "t", SyntheticSpec(num_docs=4, doc_len=30, layers=(0, 1)))
    for choice in ("exact", "shuffled"):
        out = tmp_path / f"{choice}.json"
        args = ["analyze", str(trace), "--json", str(out), "-q", "--bootstrap", "0", "--locality-null", choice]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["meta"]["params"]["locality_null"] == choice
    bad = CliRunner().invoke(app, ["analyze", str(trace), "--locality-null", "bogus"])
    assert bad.exit_code == 2
