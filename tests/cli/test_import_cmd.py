"""`routelens import vllm|sglang` and `routelens export load` through the CLI, and a weightless
(imported) trace through analyze, simulate and report: they work, or say in one line what they skip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from routelens import open_trace
from routelens.cli.main import app
from tests.engines.conftest import dense_model, documents, mixtral_trace, write_sglang_jsonl, write_vllm_jsonl  # noqa: F401 (fixtures)

runner = CliRunner()


@pytest.fixture(scope="module")
def imported(mixtral_trace, tiny_mixtral, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("import-cli")
    src = write_vllm_jsonl(root / "vllm.jsonl", documents(mixtral_trace))
    result = runner.invoke(
        app, ["import", "vllm", str(src), "--model", str(tiny_mixtral), "--out", str(root / "trace"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "no weights" in result.output
    return root / "trace"


def test_vllm_import_matches_the_reference_trace(imported, mixtral_trace):  # noqa: F811
    np.testing.assert_array_equal(open_trace(imported).load().experts, open_trace(mixtral_trace).load().experts)


def test_sglang_import_and_domain(mixtral_trace, tiny_mixtral, tmp_path):  # noqa: F811
    docs = [{**d, "domain": None} for d in documents(mixtral_trace)]
    src = tmp_path / "s.jsonl"
    write_sglang_jsonl(src, docs)
    text = src.read_text().replace(', "domain": null', "")
    src.write_text(text)
    result = runner.invoke(
        app,
        ["import", "sglang", str(src), "-m", str(tiny_mixtral), "-o", str(tmp_path / "t"), "--domain", "chat", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert open_trace(tmp_path / "t").domains == ["chat"]


def test_malformed_input_is_one_line_exit_2_nothing_written(tiny_mixtral, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt_token_ids": [1], "prompt_routed_experts": [[[0, 1], [2, 3]]]}\n{"prompt_token_ids": [1]\n')
    result = runner.invoke(
        app, ["import", "vllm", str(src), "--model", str(tiny_mixtral), "--out", str(tmp_path / "t"), "-q"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "line 2 is not valid JSON" in lines[0] and "one JSON object per line" in lines[0]
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_weightless_trace_through_analyze_simulate_report(imported, tmp_path):
    result = runner.invoke(
        app, ["analyze", str(imported), "--json", str(tmp_path / "a.json"), "-q", "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "router confidence: skipped (the trace has no weights or probs" in result.output
    analysis = json.loads((tmp_path / "a.json").read_text())
    assert analysis["meta"]["has_weights"] is False and analysis["distribution"]
    for args in (
        ["simulate", "cache", str(imported), "-C", "2", "--json", str(tmp_path / "c.json"), "-q"],
        ["simulate", "balance", str(imported), "-D", "2", "-B", "16", "--json", str(tmp_path / "b.json")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(imported), "--analysis", str(tmp_path / "a.json"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<b>confidence</b>: not in this analysis" in html and 'id="distribution"' in html


def test_export_load_formats(imported, tmp_path):
    result = runner.invoke(
        app, ["export", "load", str(imported), "--format", "sglang", "--out", str(tmp_path / "el.json"), "-q"]
    )
    assert result.exit_code == 0, result.output
    counts = np.array(json.loads((tmp_path / "el.json").read_text())["logical_count"])
    tr = open_trace(imported)
    assert (
        counts.shape == (len(tr.layers), tr.num_experts) and counts.sum() == tr.num_tokens * len(tr.layers) * tr.top_k
    )
    result = runner.invoke(
        app, ["export", "load", str(imported), "--format", "eplb", "--out", str(tmp_path / "w.npy"), "-q"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), counts)
    result = runner.invoke(
        app, ["export", "load", str(imported), "--format", "sglang", "--out", str(tmp_path / "el.npy")]
    )
    assert result.exit_code == 2 and "written as .json" in result.output
