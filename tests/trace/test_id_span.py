"""Stored expert ids never wrap: the id type is sized for every id a kept row can hold (routed
experts, zero-computation experts, the empty-slot id where k varies by layer), so a model with
E <= 256 whose zero-computation experts reach id 256 is stored as uint16, not wrapped to 0."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import routelens
from routelens.capture import RoutingSpec
from routelens.models.families import find_routers
from routelens.models.tiny import build
from routelens.store.schema import trace_schema
from tests.conftest import build_tokenizer
from tests.trace.corpora import DOCS, write_txt

LONGCAT = "transformers.models.longcat_flash.modeling_longcat_flash"


def spec(**kw) -> RoutingSpec:
    base = dict(family="x", rule="r", moe_layers=[0, 1], num_experts=256, top_k=2, expert_params=1)
    return RoutingSpec(**{**base, **kw})


def test_id_span_counts_every_storable_id():
    assert spec().id_span == 256  # ids 0..255: uint8 as before
    assert spec(num_zero_experts=2).id_span == 258
    assert spec(top_k_per_layer=[1, 2]).id_span == 257  # the empty-slot id 256 is stored
    assert trace_schema(2, 256, 2).field("experts").type.value_type.value_type == pa.uint8()
    assert trace_schema(2, 256, 2, id_span=258).field("experts").type.value_type.value_type == pa.uint16()


@pytest.fixture(scope="module")
def longcat_trace(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("longcat")
    model = build("longcat_flash", LONGCAT, n_routed_experts=255, zero_expert_num=2)
    E = 255
    with torch.no_grad():  # the second zero expert (id 256) wins everywhere
        for site in find_routers(model):
            site.router.e_score_correction_bias[E + 1] = 10.0
    tokenizer = build_tokenizer()
    model.resize_token_embeddings(len(tokenizer))  # the tiny vocabulary is smaller than the tokenizer's
    folder = tmp_path / "longcat"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    corpus = write_txt(tmp_path / "docs.txt", DOCS[:2])
    tr = routelens.trace(folder, [f"prose={corpus}"], tmp_path / "trace", seq_len=64, progress=False)
    assert tr.load().experts.dtype.kind in "iu"  # the stored ids decode
    return tr


def test_zero_experts_past_id_255_are_stored_unwrapped(longcat_trace):
    tr, E = longcat_trace, 255
    experts = tr.load().experts
    assert experts.dtype == np.uint16 and tr.manifest["num_zero_experts"] == 2
    assert bool((experts == E + 1).any(-1).all()), "id 256 must be in every token's top-k, not wrapped to 0"


def test_analyses_and_simulators_count_zero_experts_as_experts(longcat_trace):
    from routelens.analysis import analyze
    from routelens.simulate import simulate_cache

    tr = longcat_trace
    assert (tr.num_experts, tr.num_zero_experts, tr.num_ids) == (255, 2, 257)
    result = analyze(tr, progress=False, bootstrap=0)
    assert (result["meta"]["num_experts"], result["meta"]["num_zero_experts"], result["meta"]["num_ids"]) == (
        255,
        2,
        257,
    )
    share = result["distribution"]["prose"]["0"]  # (E + Z,) shares of assignments at the first MoE layer
    assert len(share) == 257 and share[256] == pytest.approx(1 / tr.top_k)  # the zero expert is in every top-k
    cache = simulate_cache(tr, capacities=(1,), progress=False)
    assert cache["cache"]["lru"]["1"]
