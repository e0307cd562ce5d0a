"""The trace stage writes the routing layouts the capture reports: per-layer k (padded with the
no-expert id, weight 0), zero-computation experts, hash-routed layers; on tiny saved models."""

from __future__ import annotations

import numpy as np
import pytest

import routelens
from routelens.models.tiny import tiny_config
from routelens.trace import TraceConfig
from tests.conftest import SAMPLE_TEXT, save_tiny_model


def _trace(tmp_path, model_type: str, **overrides):
    config = tiny_config(model_type, vocab_size=300, max_position_embeddings=512, **overrides)
    model = save_tiny_model(tmp_path / model_type, config)
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n\n".join(SAMPLE_TEXT))
    return routelens.trace(
        str(model),
        [f"web={corpus}"],
        tmp_path / "t",
        TraceConfig(seq_len=16, batch_size=3, weights_dtype="float32", progress=False),
    )


def test_per_layer_k_reaches_the_manifest_and_pads_with_the_no_expert_id(tmp_path):
    tr = _trace(tmp_path, "hunyuan_v1_moe", moe_topk=[1, 3, 2, 3])
    m = tr.manifest
    assert m["top_k_per_layer"] == [1, 3, 2, 3] and m["top_k"] == 3
    assert m["num_zero_experts"] == 0 and m["hash_routed_layers"] == []
    rows = tr.load(["weights"])
    empty = m["num_experts"] + m["num_zero_experts"]
    for layer, k in enumerate(m["top_k_per_layer"]):
        assert (rows.experts[:, layer, k:] == empty).all() and (rows.weights[:, layer, k:] == 0).all()
        assert (rows.experts[:, layer, :k] < m["num_experts"]).all() and (rows.weights[:, layer, :k] > 0).all()


def test_zero_experts_reach_the_manifest(tmp_path):
    tr = _trace(tmp_path, "longcat_flash")
    m = tr.manifest
    assert (m["num_experts"], m["num_zero_experts"]) == (8, 2)
    rows = tr.load()
    assert int(rows.experts.max()) < m["num_experts"] + m["num_zero_experts"]


@pytest.mark.parametrize("model_type", ["deepseek_v4"])
def test_hash_routed_layers_reach_the_manifest(tmp_path, model_type):
    tr = _trace(tmp_path, model_type)
    m = tr.manifest
    assert m["hash_routed_layers"] and set(m["hash_routed_layers"]) < set(m["moe_layers"])
    rows = tr.load()
    # tid2eid is zeros at random init: every token of a hash layer goes to expert 0 in every slot
    for layer in m["hash_routed_layers"]:
        assert np.all(rows.experts[:, m["moe_layers"].index(layer)] == 0)
