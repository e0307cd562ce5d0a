"""The compiled cache replay against hand-computed sequences, the plain-Python reference, and the
properties every correct simulator has (Belady optimal, capacity E only misses cold, ...)."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.simulate.cache_kernels import (
    COLD_MISSES,
    HITS,
    MISSES,
    NEVER,
    PREFETCH_LOADS,
    PREFETCH_USEFUL,
    CacheState,
    max_pinned,
    next_use_indices,
    next_use_indices_numpy,
    replay,
)
from routelens.simulate.policies import Policy
from routelens.simulate.reference import replay_reference

COUNTERS = ("hits", "misses", "cold_misses", "prefetch_loads", "prefetch_useful")


def run(stream, policy, capacity, num_experts, segment_start=None, pinned=None, predicted=None):
    x = np.asarray(stream, dtype=np.uint8)
    if x.ndim == 1:
        x = x[:, None]
    seg = np.zeros(len(x), bool) if segment_start is None else np.asarray(segment_start, bool)
    seg[0] = True
    nu = next_use_indices(x, seg) if Policy(policy) is Policy.BELADY else None
    c = replay(
        x,
        seg,
        policy,
        capacity,
        CacheState.empty(num_experts, x.shape[1]),
        nu,
        pinned=pinned,
        predicted=None if predicted is None else np.asarray(predicted).reshape(len(x), -1),
    )
    return dict(zip(COUNTERS, c.tolist()))


def side_inputs(rng, policy, x, E, capacity):
    """What pin and lookahead need on a random stream: the most used experts (at most `capacity`),
    and predictions that are the token's own experts, another expert, or none (-1)."""
    if policy == "pin":
        order = np.argsort(-np.bincount(x.reshape(-1), minlength=E), kind="stable")
        return {"pinned": order[: int(rng.integers(0, max(0, max_pinned(capacity, x.shape[1])) + 1))].tolist()}
    if policy == "lookahead":
        guess = np.where(rng.random(x.shape) < 0.6, x, rng.integers(0, E, x.shape))
        guess = np.where(rng.random(x.shape) < 0.1, -1, guess)
        guess[:, 1:] = np.where(guess[:, 1:] == guess[:, :1], -1, guess[:, 1:])  # no repeated id
        return {"predicted": guess.tolist()}
    return {}


def random_stream(rng, T, E, k, stay=0.4):
    """k distinct experts per token; with probability `stay` a token repeats the previous one's set."""
    x = np.argsort(rng.random((T, E)), axis=1)[:, :k].astype(np.uint8)
    for t in range(1, T):
        if rng.random() < stay:
            x[t] = x[t - 1]
    return x


# -- hand-computed sequences (k = 1 unless said) ------------------------------------------------
# Stream 0 1 2 0 3 0 4, capacity 2:
#   LRU:    0m 1m 2m(evict 0) 0m(evict 1) 3m(evict 2) 0h 4m(evict 3)               -> 1 hit
#   Belady: 0m 1m 2m(evict 1: never used again) 0h 3m(evict 2: never again) 0h
#           4m(0 and 3 both never used again: the tie goes to the least recent, 3)            -> 2 hits
HAND = [0, 1, 2, 0, 3, 0, 4]


def test_lru_hand_sequence():
    assert run(HAND, "lru", 2, 5) == dict(hits=1, misses=6, cold_misses=5, prefetch_loads=0, prefetch_useful=0)


def test_lfu_keeps_the_frequent_expert():
    # 0 0 0 1 2 1 2 0 at capacity 2: LFU never evicts 0 (freq 3); LRU evicts it when 2 arrives.
    stream = [0, 0, 0, 1, 2, 1, 2, 0]
    # LFU: 0m 0h 0h 1m 2m(evict 1: freq 1 < 3) 1m(evict 2) 2m(evict 1: freq 2 < 3) 0h
    assert run(stream, "lfu", 2, 3)["hits"] == 3
    # LRU: 0m 0h 0h 1m 2m(evict 0) 1h 2h 0m
    assert run(stream, "lru", 2, 3)["hits"] == 4


def test_belady_hand_sequence():
    assert run(HAND, "belady", 2, 5)["hits"] == 2


def test_grouped_tokens_never_evict_their_own_experts():
    # k=2, capacity 3: tokens (0,1) (2,0) (3,1); clocks 1 2 | 3 4 | 5 6.
    # (0,1): 2 cold misses. (2,0): 0 hits, 2 loaded into the free slot. (3,1): 1 hits on arrival; 3 evicts
    # the least recent of {0 (clock 4), 2 (clock 3)}, never 1 (clock 2, but used by this token) -> 2 hits.
    # Serving the requests one by one instead would evict 1 for 3 and then miss 1: 1 hit.
    stream = [[0, 1], [2, 0], [3, 1]]
    lru = run(stream, "lru", 3, 4)
    assert (lru["hits"], lru["misses"]) == (2, 4)
    # A fourth token (2, 0): 2 was evicted -> miss, 0 kept -> hit.
    assert run(stream + [[2, 0]], "lru", 3, 4)["hits"] == 3


def test_capacity_below_k_serves_requests_one_by_one():
    # k=3, capacity 2, tokens (0,1,2) twice. Token 1: 0m 1m 2m(evict 0, LRU). Token 2: 0m(evict 1)
    # 1m(evict 2) 2m(evict 0): the classic LRU loop, no hit at all.
    assert run([[0, 1, 2], [0, 1, 2]], "lru", 2, 3)["hits"] == 0
    # Belady: 0m 1m 2m(evict 1: next use 4 > 0's 3) | 0h 1m(evict 0: never again, 2 is next) 2h -> 2 hits.
    assert run([[0, 1, 2], [0, 1, 2]], "belady", 2, 3)["hits"] == 2


def test_prefetch_loads_what_followed_last_time():
    # k=1, capacity 1: 0 1 0 1 0 1. After token "1" at t=1 the table learns 0 -> 1; after t=2 (0)
    # it prefetches 1 (evicting 0): t=3 hits. After t=3 it knows 1 -> 0: prefetch 0, t=4 hits, ...
    c = run([0, 1, 0, 1, 0, 1], "prefetch", 1, 2)
    assert c["misses"] == 3  # t = 0, 1, 2
    # Prefetches after t = 2, 3, 4, 5; the last one has no next token to serve.
    assert c["hits"] == 3 and c["prefetch_loads"] == 4 and c["prefetch_useful"] == 3
    assert run([0, 1, 0, 1, 0, 1], "lru", 1, 2)["hits"] == 0


def test_pin_keeps_the_hot_expert_through_a_scan():
    # k=1, capacity 2, expert 0 pinned: 0 1 2 0 3 0 4 0. The pinned slot holds 0 from its first
    # request on (a cold miss), the other slot cycles 1 2 3 4 (all misses): hits = the three repeats of 0.
    # Plain LRU at capacity 2: 0m 1m 2m(evict 0) 0m(evict 1) 3m(evict 2) 0h 4m(evict 3) 0h -> 2 hits.
    stream = [0, 1, 2, 0, 3, 0, 4, 0]
    pin = run(stream, "pin", 2, 5, pinned=[0])
    assert (pin["hits"], pin["misses"], pin["cold_misses"]) == (3, 5, 5)
    assert run(stream, "lru", 2, 5)["hits"] == 2


def test_pin_leaves_room_for_a_whole_token():
    # The unpinned slots must hold a token's k experts (k=2: capacity 3 pins at most 1), or one
    # request below k (k=3, capacity 2: at most 1).
    assert (max_pinned(3, 2), max_pinned(2, 2), max_pinned(8, 2), max_pinned(2, 3), max_pinned(1, 1)) == (1, 0, 6, 1, 0)
    # k=2, capacity 4, pinned {0, 1}: two LRU slots. (2, 3) 2 misses; (0, 4): 0 cold into its slot,
    # 4 evicts 2 (least recent; 3 is more recent); (1, 3): 1 cold, 3 hit; (2, 0): 2 evicts 4, 0 hit.
    c = run([[2, 3], [0, 4], [1, 3], [2, 0]], "pin", 4, 5, pinned=[0, 1])
    assert (c["hits"], c["misses"]) == (2, 6)


def test_lookahead_loads_the_prediction_before_the_token():
    # k=1, capacity 1, stream 0 1 0 1 with perfect predictions except none for token 0:
    # t0 0 miss; before t1 load 1 (evict 0) -> hit; before t2 load 0 -> hit; before t3 load 1 -> hit.
    c = run([0, 1, 0, 1], "lookahead", 1, 2, predicted=[-1, 1, 0, 1])
    assert (c["hits"], c["misses"], c["prefetch_loads"], c["prefetch_useful"]) == (3, 1, 3, 3)
    # A wrong prediction is a wasted load and evicts the expert that was needed: 0 m, load 1 (evict 0), 0 m.
    c = run([0, 0], "lookahead", 1, 2, predicted=[-1, 1])
    assert (c["hits"], c["misses"], c["prefetch_loads"], c["prefetch_useful"]) == (0, 2, 1, 0)


def test_reset_per_document_counts_cold_misses_again():
    stream, starts = [0, 1, 0, 1], [True, False, True, False]
    assert run(stream, "lru", 2, 2)["hits"] == 2
    c = run(stream, "lru", 2, 2, segment_start=starts)
    assert c["hits"] == 0 and c["cold_misses"] == 4


# -- against the reference -----------------------------------------------------------------------
@pytest.mark.parametrize("policy", list(Policy))
def test_kernel_equals_reference_on_random_streams(policy):
    for seed in range(40):
        rng = np.random.default_rng(seed)
        E = int(rng.integers(2, 10))
        k = int(rng.integers(1, min(E, 4) + 1))
        x = random_stream(rng, int(rng.integers(1, 50)), E, k)
        starts = (rng.random(len(x)) < 0.1).tolist()
        starts[0] = True
        for capacity in range(1, E + 1):
            side = side_inputs(rng, policy, x, E, capacity)
            expected = replay_reference(x.tolist(), policy, capacity, starts, **side)
            assert run(x, policy, capacity, E, starts, **side) == expected, (seed, E, k, capacity, side)


@pytest.mark.parametrize("policy", list(Policy))
def test_replay_in_chunks_equals_one_pass(policy):
    rng = np.random.default_rng(7)
    x = random_stream(rng, 400, 8, 2)
    seg = np.zeros(400, bool)
    seg[[0, 150, 151, 320]] = True
    nu = next_use_indices(x, seg)
    side = side_inputs(rng, policy, x, 8, 3)
    predicted = np.asarray(side.get("predicted", np.zeros((400, 2))))
    pinned = side.get("pinned")
    whole = replay(x, seg, policy, 3, CacheState.empty(8, 2), nu, pinned=pinned, predicted=predicted)
    state, parts = CacheState.empty(8, 2), np.zeros_like(whole)
    for lo, hi in [(0, 97), (97, 151), (151, 400)]:
        parts += replay(
            x[lo:hi], seg[lo:hi], policy, 3, state, nu[2 * lo : 2 * hi], pinned=pinned, predicted=predicted[lo:hi]
        )
    assert parts.tolist() == whole.tolist()


def test_next_use_compiled_equals_vectorised_and_brute_force():
    rng = np.random.default_rng(3)
    x = random_stream(rng, 300, 6, 3)
    seg = rng.random(300) < 0.05
    seg[0] = True
    fast, vec = next_use_indices(x, seg, base=10), next_use_indices_numpy(x, seg, base=10)
    assert fast.shape == (300 * 3,) and np.array_equal(fast, vec)
    flat, seg_of = x.reshape(-1), np.repeat(np.cumsum(seg), 3)
    for a in range(0, len(flat), 37):
        later = [b for b in range(a + 1, len(flat)) if flat[b] == flat[a] and seg_of[b] == seg_of[a]]
        assert fast[a] == (later[0] + 10 if later else NEVER)


# -- properties ----------------------------------------------------------------------------------
def test_belady_never_below_any_other_policy():
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        E = int(rng.integers(2, 10))
        k = int(rng.integers(1, min(E, 4) + 1))
        x = random_stream(rng, 120, E, k, stay=float(rng.random()))
        for capacity in range(1, E + 1):
            opt = run(x, "belady", capacity, E)
            for policy in ("lru", "lfu", "pin"):  # demand paging: Belady bounds the hits
                side = side_inputs(rng, policy, x, E, capacity)
                assert opt["hits"] >= run(x, policy, capacity, E, **side)["hits"], (seed, policy, capacity)
            # A prefetching policy may turn misses into hits, but never loads fewer experts in all.
            for policy in ("prefetch", "lookahead"):
                pre = run(x, policy, capacity, E, **side_inputs(rng, policy, x, E, capacity))
                assert opt["misses"] <= pre["misses"] + pre["prefetch_loads"], (seed, policy, capacity)


@pytest.mark.parametrize("policy", ["lru", "lfu", "belady"])
def test_capacity_e_misses_only_cold(policy):
    rng = np.random.default_rng(5)
    x = random_stream(rng, 500, 8, 2)
    c = run(x, policy, 8, 8)
    assert c["misses"] == c["cold_misses"] == len(np.unique(x))
    assert c["hits"] == x.size - len(np.unique(x))  # i.e. the warm hit rate is exactly 1.0


def test_lru_at_capacity_k_on_a_repeated_set_hits_after_the_first_token():
    x = np.tile(np.array([[5, 2, 7]], np.uint8), (50, 1))
    x[1::2] = x[1::2, ::-1]  # the same set, the routing order varying
    c = run(x, "lru", 3, 8)
    assert (c["misses"], c["hits"]) == (3, 3 * 49)


def test_shuffling_a_local_stream_lowers_the_hit_rate():
    rng = np.random.default_rng(11)
    x = random_stream(rng, 3000, 8, 2, stay=0.7)
    shuffled = x[rng.permutation(len(x))]
    assert run(x, "lru", 4, 8)["hits"] > run(shuffled, "lru", 4, 8)["hits"] + 0.2 * x.size


def test_counter_slots_are_named_in_order():
    assert (HITS, MISSES, COLD_MISSES, PREFETCH_LOADS, PREFETCH_USEFUL) == tuple(range(5))
