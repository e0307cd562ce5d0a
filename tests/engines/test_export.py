"""Expert loads exported for SGLang (--init-expert-location) and DeepSeek EPLB, from planted routing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routelens import RoutelensError, open_trace
from routelens.engines.export import expert_load, export_load
from tests.simulate.conftest import write_planted_trace

# Four tokens, MoE layers 0 and 2 of a model whose layer 1 is dense, top-2 of 4.
EXPERTS = np.array(
    [
        [[0, 1], [3, 2]],
        [[0, 2], [3, 1]],
        [[1, 0], [3, 0]],
        [[0, 3], [2, 3]],
    ]
)
COUNTS = [[4, 2, 1, 1], [1, 1, 2, 4]]  # assignments per MoE layer and expert, counted by hand


@pytest.fixture
def planted_trace(tmp_path):
    return write_planted_trace(tmp_path / "t", EXPERTS, [3, 1], 4, layers=[0, 2])


def test_expert_load_counts_every_choice(planted_trace):
    load = expert_load(planted_trace)
    assert load.shape == (2, 4)  # (MoE layers, E)
    assert load.tolist() == COUNTS
    assert load.sum() == EXPERTS.size


def test_sglang_file_has_a_row_per_decoder_layer(planted_trace, tmp_path):
    path = export_load(planted_trace, tmp_path / "expert_location.json", format="sglang", progress=False)
    assert json.loads(path.read_text()) == {"logical_count": [COUNTS[0], [0, 0, 0, 0], COUNTS[1]]}
    moe_only = export_load(planted_trace, tmp_path / "moe.json", format="sglang", layers="moe", progress=False)
    assert json.loads(moe_only.read_text()) == {"logical_count": COUNTS}


def test_eplb_weight_as_json_and_npy(planted_trace, tmp_path):
    as_json = export_load(planted_trace, tmp_path / "weight.json", format="eplb", progress=False)
    assert json.loads(as_json.read_text()) == COUNTS
    as_npy = export_load(planted_trace, tmp_path / "weight.npy", format="eplb", progress=False)
    np.testing.assert_array_equal(np.load(as_npy), COUNTS)


def test_one_domain_and_refusals(planted_trace, tmp_path):
    tr = open_trace(planted_trace)
    assert expert_load(tr, domain="planted").tolist() == COUNTS
    with pytest.raises(RoutelensError, match="--domain 'web' is not in the trace"):
        expert_load(tr, domain="web")
    with pytest.raises(RoutelensError, match=r"written as \.json or \.npy"):
        export_load(tr, tmp_path / "weight.csv", format="eplb")
    with pytest.raises(RoutelensError, match="--format 'csv' is unknown"):
        export_load(tr, tmp_path / "w.json", format="csv")
