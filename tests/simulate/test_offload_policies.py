"""Offloading what-ifs over traces (issue 14): pinned experts, the lookahead predictor from the
trace's `lookahead` column, transfer time at a bandwidth, and per-layer budgets against the
uniform split at equal bytes, each on a planted trace with a hand-computed answer."""

from __future__ import annotations

import numpy as np
import pytest

from routelens import RoutelensError
from routelens.simulate import simulate_cache
from routelens.simulate.budget import best_split, uniform_split


def layers_of(*streams):
    """k = 1 streams, one per layer -> experts (tokens, layers, 1)."""
    return np.stack([np.asarray(s) for s in streams], axis=1)[:, :, None]


def test_pin_keeps_the_most_used_expert(planted):
    # k=1, capacity 2, --pin 1: expert 0 (4 of 8 requests) keeps a slot; the other cycles 1 2 3 4.
    # Hits: the three repeats of 0 -> 3/8; LRU at capacity 2 gets 2/8 (see test_cache_kernels).
    path = planted(layers_of([0, 1, 2, 0, 3, 0, 4, 0]), [8], 5)
    out = simulate_cache(path, policies=("lru",), capacities=(1, 2), pin=1)
    assert list(out["cache"]) == ["lru", "pin"]  # --pin adds the policy
    assert out["cache"]["pin"]["0"]["2"] == 3 / 8 and out["cache"]["lru"]["0"]["2"] == 2 / 8
    assert out["cache_meta"]["pinned"] == {"0": [0]}
    # Capacity 1 (= k) leaves no slot to pin: pin is LRU there.
    assert out["cache"]["pin"]["0"]["1"] == out["cache"]["lru"]["0"]["1"]


def test_pin_policy_without_a_count_is_refused(planted):
    path = planted(layers_of([0, 1]), [2], 2)
    with pytest.raises(RoutelensError, match="--pin N"):
        simulate_cache(path, policies=("pin",))


def test_lookahead_loads_what_the_earlier_layer_predicted(planted):
    # Two layers, k=1, E=2, capacity 1. Layer 1 routes 0 1 0 1 and layer 0's input under layer 1's
    # router predicted exactly that: every request of layer 1 hits (4 prefetch loads, all used).
    # Layer 0 has no earlier layer (no prediction): plain LRU on 0 0 1 1 -> 2 hits.
    experts = layers_of([0, 0, 1, 1], [0, 1, 0, 1])
    ahead = np.full((4, 2, 1, 1), -1, np.int16)  # (tokens, layers, D, k); layer 1 has no layer 2: fill -1
    ahead[:, 0, 0, 0] = [0, 1, 0, 1]
    out = simulate_cache(planted(experts, [4], 2, lookahead=ahead), policies=("lru", "lookahead"), capacities=(1,))
    assert out["cache"]["lookahead"]["1"]["1"] == 1.0 and out["cache"]["lru"]["1"]["1"] == 0.0
    d = out["cache_detail"]["lookahead"]["1"]["1"]
    assert (d["loads_per_token"], d["prefetch_accuracy"], d["wasted_loads_per_token"]) == (1.0, 1.0, 0.0)
    assert out["cache"]["lookahead"]["0"]["1"] == out["cache"]["lru"]["0"]["1"] == 0.5
    # A wrong prediction wastes a load: predict 1 everywhere -> t0 load 1, miss 0 (evicts 1), ...
    ahead[:, 0, 0, 0] = 1
    wrong = simulate_cache(planted(experts, [4], 2, lookahead=ahead), policies=("lookahead",), capacities=(1,))
    w = wrong["cache_detail"]["lookahead"]["1"]["1"]
    # t0: load 1, 0 misses (evict 1); t1: load 1 (evict 0), hit; t2: 1 resident, 0 misses; t3: load 1, hit.
    assert (w["hit_rate"], w["prefetch_loads_per_token"], w["wasted_loads_per_token"]) == (0.5, 0.75, 0.25)


def test_lookahead_needs_the_column_and_a_recorded_distance(planted):
    path = planted(layers_of([0, 1], [1, 0]), [2], 2)
    with pytest.raises(RoutelensError, match="--lookahead"):
        simulate_cache(path, policies=("lookahead",))
    ahead = np.full((2, 2, 1, 1), -1, np.int16)
    with pytest.raises(RoutelensError, match="--lookahead-distance 2"):
        simulate_cache(
            planted(layers_of([0, 1], [1, 0]), [2], 2, lookahead=ahead), policies=("lookahead",), lookahead_distance=2
        )


def test_load_time_per_token_from_bandwidth(planted):
    # Two layers of 0 1 0 1 at capacity 1: every request misses, 1 load per token per layer.
    path = planted(layers_of([0, 1, 0, 1], [0, 1, 0, 1]), [4], 2)
    out = simulate_cache(path, policies=("lru",), capacities=(1, 2), expert_bytes=2_000_000, bandwidth_gbps=4.0)
    assert out["cache_detail"]["lru"]["0"]["1"]["load_seconds_per_token"] == pytest.approx(2e6 / 4e9)
    assert out["cache_load_time"]["lru"]["1"] == pytest.approx(2 * 2e6 / 4e9)  # both layers
    assert out["cache_load_time"]["lru"]["2"] == pytest.approx(2 * 0.5 * 2e6 / 4e9)  # 2 cold loads of 4 tokens


def test_budget_gives_the_slots_to_the_layer_that_needs_them(planted):
    # k=1, E=3, 12 tokens. Layer 0 always routes to expert 0: 11 hits at any capacity >= 1.
    # Layer 1 cycles 0 1 2: LRU hits nothing below capacity 3, 9 at 3. Four slots of 1 byte:
    # uniform 2 + 2 -> 11 + 0 hits of 24; best 1 + 3 -> 11 + 9.
    path = planted(layers_of([0] * 12, [0, 1, 2] * 4), [12], 3)
    out = simulate_cache(path, policies=("lru",), expert_bytes=1, budget_bytes=(4,))
    row = out["cache_budget"]["lru"]["4"]
    assert row["slots"] == 4
    assert row["uniform"]["split"] == {"0": 2, "1": 2} and row["best"]["split"] == {"0": 1, "1": 3}
    assert row["uniform"]["hit_rate"] == pytest.approx(11 / 24) and row["best"]["hit_rate"] == pytest.approx(20 / 24)
    assert row["best"]["loads_per_token"] == pytest.approx(1 / 12 + 3 / 12)
    assert row["uniform"]["loads_per_token"] == pytest.approx(1 / 12 + 12 / 12)
    assert row["best"]["bytes"] == row["uniform"]["bytes"] == 4


def test_best_split_equals_brute_force_on_random_curves():
    from itertools import product

    rng = np.random.default_rng(3)
    for _ in range(30):
        L, E = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        hits = np.cumsum(rng.random((L, E + 1)) * (rng.random((L, E + 1)) < 0.7), axis=1)  # not always concave
        slots = int(rng.integers(0, L * E + 2))
        got = best_split(hits, slots)
        assert got.sum() <= slots
        best = max(
            sum(hits[layer, c] for layer, c in enumerate(split))
            for split in product(range(E + 1), repeat=L)
            if sum(split) <= slots
        )
        assert hits[np.arange(L), got].sum() == pytest.approx(best)


def test_uniform_split_spreads_the_remainder_over_the_first_layers():
    assert uniform_split(3, 7, 8).tolist() == [3, 2, 2]
    assert uniform_split(2, 20, 8).tolist() == [8, 8]  # capped at E


def test_budget_needs_the_whole_curve_and_the_expert_size(planted):
    path = planted(layers_of([0, 1]), [2], 2)
    with pytest.raises(RoutelensError, match="leave out --capacity"):
        simulate_cache(path, budget_bytes=(4,), capacities=(1,))
    with pytest.raises(RoutelensError, match="--expert-bytes"):
        simulate_cache(path, budget_bytes=(4,))
