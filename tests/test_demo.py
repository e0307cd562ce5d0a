"""`run_demo` end to end at a tiny scale: corpus, training, trace, analyses, report (the command
itself, and the trained model reused by its next run: tests/cli/test_demo_cmd.py)."""

from __future__ import annotations

import json

import pytest

import routelens
from routelens.demo import DemoConfig, run_demo
from routelens.errors import RoutelensError
from tests.conftest import DEMO_TINY


@pytest.fixture(scope="module")
def demo(demo_run):
    return demo_run  # tests/conftest.py: one tiny run_demo for the session


def test_demo_writes_model_trace_and_report(demo):
    out, report = demo
    assert report == out / "report.html" and report.stat().st_size > 10_000
    html = report.read_text()
    assert "<svg" in html and "Traceback" not in html
    assert {"corpus", "model", "trace"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "corpus").glob("*.txt")) == ["code.txt", "data.txt", "math.txt", "prose.txt"]

    meta = json.loads((out / "model" / "training.json").read_text())
    assert meta["steps"] == 3 and meta["model"]["architecture"] == "MixtralForCausalLM"
    trace = routelens.open_trace(out / "trace")
    assert trace.manifest["complete"] and trace.num_experts == 8 and trace.top_k == 2
    assert set(trace.domains) == {"code", "prose", "math", "data"}
    # every domain traced up to its budget
    for c in trace.manifest["corpora"]:
        assert 0 < c["tokens"] <= DEMO_TINY["trace_tokens"]

    analysis = json.loads((out / "analysis.json").read_text())
    assert {"distribution", "locality", "cache", "balance", "distinct", "importance"} <= set(analysis)
    # checkpoints at steps 1, 2, 3; the last one is the final model itself
    assert meta["checkpoints"] == ["step-000001", "step-000002", "step-000003"]
    assert analysis["saturation"]["checkpoints"] == ["step-000001", "step-000002", "final"]
    assert all(v[-1] == 1.0 for v in analysis["saturation"]["topk"].values())
    assert '<section id="saturation">' in html and '<section id="distinct">' in html


def test_demo_pos_section_when_spacy_is_installed(demo):
    from routelens.corpus.tagger import load_pipeline

    try:
        load_pipeline()
    except RoutelensError as exc:
        pytest.skip(str(exc))
    out, _ = demo
    analysis = json.loads((out / "analysis.json").read_text())
    assert "pos" in analysis and routelens.open_trace(out / "pos").manifest["complete"]


def test_out_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RoutelensError, match="is a file"):
        DemoConfig(out=tmp_path / "file")
    with pytest.raises(
        RoutelensError, match="unknown option 'trace_token' for DemoConfig; valid options are out, trace_tokens"
    ):
        run_demo(trace_token=10)
