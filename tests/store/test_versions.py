"""Format versions: version 1 traces keep reading, newer versions than this release are refused in
one line, and a version-2 trace may lack `weights` (the analyses that need it say so)."""

from __future__ import annotations

import json

import pytest

from routelens import RoutelensError, open_trace
from routelens.store.schema import FORMAT_VERSION
from routelens.synthetic import SyntheticSpec, write_synthetic_trace


@pytest.fixture
def trace_path(tmp_path):
    return write_synthetic_trace(tmp_path / "t", SyntheticSpec(num_docs=2, doc_len=5, layers=(0, 1), seed=3))


def _set_version(path, version) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = version
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_new_traces_are_version_2_and_version_1_still_reads(trace_path):
    assert open_trace(trace_path).format_version == FORMAT_VERSION == 2
    before = open_trace(trace_path).load(["weights"])
    _set_version(trace_path, 1)
    tr = open_trace(trace_path)
    assert tr.format_version == 1 and tr.has("weights")
    assert (tr.load(["weights"]).weights == before.weights).all()


@pytest.mark.parametrize(("version", "fix"), [(3, "upgrade routelens"), ("two", "re-create the trace")])
def test_unreadable_versions_are_refused_in_one_line(trace_path, version, fix):
    _set_version(trace_path, version)
    with pytest.raises(RoutelensError, match=f"format_version .*reads versions 1, 2: {fix}") as info:
        open_trace(trace_path)
    assert "\n" not in str(info.value)


def test_missing_weights_column_is_named_with_its_reason(tmp_path):
    import numpy as np

    from tests.analysis.test_compare import write_pair_trace

    path = write_pair_trace(tmp_path / "w", np.zeros((3, 1, 2), np.uint8) + [0, 1], [3], ["x"])
    tr = open_trace(path)
    assert not tr.has("weights")
    with pytest.raises(RoutelensError, match="has no column weights .*record experts only"):
        tr.load(["weights"])
    with pytest.raises(RoutelensError, match="router confidence needs the trace's `weights` column"):
        tr.require("weights", "router confidence")
