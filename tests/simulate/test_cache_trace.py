"""`simulate_cache` over traces: the JSON contract, planted locality in closed form, bytes moved,
reset per document, and the shuffled control."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routelens import RoutelensError, open_trace
from routelens.simulate import cache_with_control, simulate_cache
from routelens.simulate.reference import replay_reference
from routelens.synthetic import SyntheticSpec, write_synthetic_trace


@pytest.fixture(scope="module")
def markov_trace(tmp_path_factory):
    """k=1, E=8, uniform draws, first choice repeated with probability 0.6: 40 documents of 500 tokens."""
    spec = SyntheticSpec(num_docs=20, doc_len=500, layers=(1, 3), num_experts=8, top_k=1, repeat=0.6, seed=4)
    return write_synthetic_trace(tmp_path_factory.mktemp("sim") / "markov", spec)


def test_contract_keys_and_nesting(markov_trace):
    out = simulate_cache(markov_trace, policies=("lru", "belady"), capacities=(1, 4, 8))
    assert set(out["cache"]) == {"lru", "belady"}
    assert set(out["cache"]["lru"]) == {"1", "3"}  # true layer indices, as strings
    assert list(out["cache"]["lru"]["3"]) == ["1", "4", "8"]
    assert out["cache_gap"]["1"]["4"] == pytest.approx(out["cache"]["belady"]["1"]["4"] - out["cache"]["lru"]["1"]["4"])
    assert out["cache_gap"]["1"]["4"] >= 0
    d = out["cache_detail"]["lru"]["1"]["4"]
    assert d["hit_rate"] == out["cache"]["lru"]["1"]["4"]
    assert d["misses_per_token"] == pytest.approx(1 - d["hit_rate"])  # k = 1
    json.dumps(out)  # serialisable as it stands


def test_planted_repeat_gives_the_closed_form_hit_rate(markov_trace):
    # Capacity 1, k=1: a hit iff the token's expert equals the previous token's. Within a document that
    # happens with probability repeat + (1 - repeat) / E; at a document boundary with 1 / E.
    r, E, T, docs = 0.6, 8, 20_000, 40
    expected = ((T - docs) * (r + (1 - r) / E) + (docs - 1) / E) / T
    out = cache_with_control(markov_trace, policies=("lru",), capacities=(1,), seed=1)
    for layer in ("1", "3"):
        assert out["cache"]["lru"][layer]["1"] == pytest.approx(expected, abs=0.02)
        # Shuffled, two random tokens share an expert with probability sum_e p_e^2 = 1/E.
        assert out["cache_shuffled"]["lru"][layer]["1"] == pytest.approx(1 / E, abs=0.015)


def test_trace_replay_equals_the_reference_on_every_layer(planted):
    rng = np.random.default_rng(0)
    experts = np.argsort(rng.random((300, 2, 8)), axis=-1)[..., :3]  # (tokens, layers, k)
    experts[1::3] = experts[0::3][: len(experts[1::3])]  # some locality
    lengths = [100, 50, 150]
    path = planted(experts, lengths, 8, layers=[4, 9], shards=3)
    for reset in (False, True):
        out = simulate_cache(path, capacities=(2, 5), reset_per_document=reset)
        starts = np.zeros(300, bool)
        starts[[0, 100, 150] if reset else [0]] = True
        for policy in ("lru", "lfu", "belady", "prefetch"):
            for li, layer in enumerate(("4", "9")):
                for c in (2, 5):
                    ref = replay_reference(experts[:, li].tolist(), policy, c, starts.tolist())
                    assert out["cache"][policy][layer][str(c)] == ref["hits"] / (300 * 3), (reset, policy, layer, c)


def test_capacity_e_with_reset_misses_exactly_the_distinct_experts_per_document(markov_trace):
    tr = open_trace(markov_trace)
    whole = tr.load()
    out = cache_with_control(markov_trace, policies=("lru", "lfu"), capacities=(8,), reset_per_document=True)
    for li, layer in enumerate(tr.layers):
        cold = sum(len(np.unique(whole.experts[whole.doc_id == d, li])) for d in np.unique(whole.doc_id))
        detail = out["cache_detail"]["lru"][str(layer)]["8"]
        assert detail["hit_rate"] == pytest.approx(1 - cold / len(whole))
        assert detail["hit_rate_warm"] == 1.0
        # Shuffling within documents keeps each document's experts: the same cold misses.
        assert out["cache_shuffled"]["lfu"][str(layer)]["8"] == pytest.approx(detail["hit_rate"])


def test_bytes_moved_from_expert_params_or_override(planted):
    experts = np.array([[[0, 1]], [[2, 3]], [[0, 1]], [[0, 2]]])  # (4 tokens, 1 layer, k=2)
    path = planted(experts, [4], 4, expert_params=3 * 4096 * 14336)
    out = simulate_cache(path, policies=("lru",), capacities=(2,))
    # Capacity 2 = k: only repeated sets hit. Misses: 2 + 2 + 2 + 1 = 7 over 4 tokens.
    d = out["cache_detail"]["lru"]["0"]["2"]
    assert d["misses_per_token"] == 7 / 4
    assert out["cache_meta"]["expert_bytes"] == 2 * 3 * 4096 * 14336  # bf16 by default
    assert d["bytes_per_token"] == 7 / 4 * 2 * 3 * 4096 * 14336
    assert (
        simulate_cache(path, policies=("lru",), capacities=(2,), dtype_bytes=1)["cache_meta"]["expert_bytes"]
        == 3 * 4096 * 14336
    )
    over = simulate_cache(path, policies=("lru",), capacities=(2,), expert_bytes=1000)
    assert over["cache_detail"]["lru"]["0"]["2"]["bytes_per_token"] == 7 / 4 * 1000


def test_unknown_expert_size_leaves_bytes_empty(markov_trace):
    out = simulate_cache(markov_trace, policies=("lru",), capacities=(2,))
    assert out["cache_meta"]["expert_bytes"] is None
    assert out["cache_detail"]["lru"]["1"]["2"]["bytes_per_token"] is None


def test_layers_gathered_in_several_passes_give_the_same_answer(markov_trace):
    one = simulate_cache(markov_trace, policies=("belady",), capacities=(2,))
    many = simulate_cache(markov_trace, policies=("belady",), capacities=(2,), memory_bytes=1)
    assert one["cache"] == many["cache"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(capacities=(9,)), "capacity 9"),
        (dict(capacities=(0,)), "[0]"),
        (dict(policies=("fifo",)), "fifo"),
        (dict(expert_bytes=-1), "expert_bytes=-1"),
    ],
)
def test_bad_options_name_the_value(markov_trace, kwargs, fragment):
    with pytest.raises(RoutelensError, match=None) as info:
        simulate_cache(markov_trace, **kwargs)
    assert fragment in str(info.value)


def test_duplicate_experts_in_a_token_are_refused(planted):
    experts = np.array([[[1, 1]], [[0, 2]]])
    with pytest.raises(RoutelensError, match="same expert"):
        simulate_cache(planted(experts, [2], 4), capacities=(2,))


def test_document_starts_survive_chunk_boundaries(markov_trace):
    from routelens.simulate.streams import iter_layer_streams

    tr = open_trace(markov_trace)
    whole = [(s.layer, s.experts.copy(), s.doc_start.copy()) for s in iter_layer_streams(tr)]
    small = [(s.layer, s.experts.copy(), s.doc_start.copy()) for s in iter_layer_streams(tr, rows=333)]
    for (la, xa, da), (lb, xb, db) in zip(whole, small, strict=True):
        assert la == lb and np.array_equal(xa, xb) and np.array_equal(da, db)
        assert xa.shape == (tr.num_tokens, tr.top_k)  # (tokens, k)
    assert whole[0][2].sum() == 40 and whole[0][2][::500].all()  # 40 documents of 500 tokens


def test_simulate_all_routes_each_override_to_its_config(markov_trace):
    from routelens.simulate import BalanceConfig, CacheConfig, simulate_all, simulate_balance

    out = simulate_all(
        markov_trace, policies=("lru",), capacities=(2,), devices=2, batch_tokens=100, cfs=(1.0,), seed=3
    )
    alone = cache_with_control(markov_trace, CacheConfig(policies=("lru",), capacities=(2,), seed=3))
    assert out["cache"] == alone["cache"] and out["cache_shuffled"] == alone["cache_shuffled"]
    balance = simulate_balance(markov_trace, BalanceConfig(devices=2, batch_tokens=100, cfs=(1.0,), seed=3))
    assert out["balance"] == balance["balance"] and out["balance_meta"]["devices"] == 2
    with pytest.raises(RoutelensError, match=r"unknown option 'device' for simulate_all; valid options are .*devices"):
        simulate_all(markov_trace, device=2)
    with pytest.raises(
        RoutelensError, match=r"unknown option 'capacity' for CacheConfig; valid options are policies, capacities"
    ):
        simulate_cache(markov_trace, capacity=2)


def test_prefetch_beats_belady_hits_only_by_loading_more(planted):
    # k=1, E=2, capacity 1, stream 0 1 0 1 0 1. Belady (demand paging): every request misses -> hit 0,
    # 6 loads / 6 tokens. Prefetch: misses at t0..t2; from t2 on it has learnt "1 follows 0, 0 follows 1"
    # and loads the next expert after every token (t2..t5: 4 prefetch loads), so t3..t5 hit:
    # hit rate 3/6, loads (3 misses + 4 prefetches) / 6. Belady is the optimum of demand paging only.
    path = planted(np.array([0, 1, 0, 1, 0, 1]).reshape(6, 1, 1), [6], 2)
    out = simulate_cache(path, policies=("belady", "prefetch"), capacities=(1,))
    assert out["cache"]["belady"]["0"]["1"] == 0.0 and out["cache_loads"]["belady"]["0"]["1"] == 1.0
    assert out["cache"]["prefetch"]["0"]["1"] == 0.5
    assert out["cache_loads"]["prefetch"]["0"]["1"] == pytest.approx(7 / 6)
    for policy in ("belady", "prefetch"):
        assert out["cache_loads"][policy]["0"]["1"] == out["cache_detail"][policy]["0"]["1"]["loads_per_token"]
