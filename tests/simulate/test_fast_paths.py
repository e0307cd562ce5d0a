"""The fast paths of the cache simulator against the slow ones: LRU's one-pass hit curve against a
replay per capacity and the plain-Python reference; Belady's uint32 next-use distances against
the int64 indices, and Belady in blocks (next uses from checkpoints) against the whole stream's;
and every policy's compiled replay against the reference on streams with more experts (uint8 and
uint16 ids) than the small-E test in test_cache_kernels."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.simulate.belady import replay_belady
from routelens.simulate.cache_kernels import (
    NEVER,
    CacheState,
    max_pinned,
    next_use_distances,
    next_use_indices,
    replay,
)
from routelens.simulate.curve import CurveState, lru_curve
from routelens.simulate.next_use import next_use_checkpoints
from routelens.simulate.policies import Policy
from routelens.simulate.reference import replay_reference

COUNTERS = ("hits", "misses", "cold_misses", "prefetch_loads", "prefetch_useful")


def random_stream(rng, T, E, k, stay=0.4, dtype=np.uint8):
    """k distinct experts per token, drawn from a skewed popularity; with probability `stay` a token
    repeats the previous one's set, in a shuffled order."""
    popularity = rng.dirichlet(np.full(E, 0.5))
    x = np.stack([rng.choice(E, k, replace=False, p=popularity) for _ in range(T)]).astype(dtype)
    for t in range(1, T):
        if rng.random() < stay:
            x[t] = rng.permutation(x[t - 1])
    return x


def segments(rng, T, p=0.05):
    starts = rng.random(T) < p
    starts[0] = True
    return starts


@pytest.mark.parametrize("E, k", [(2, 1), (3, 2), (8, 2), (8, 3), (16, 4), (40, 6), (64, 8)])
def test_lru_curve_equals_a_replay_per_capacity_and_the_reference(E, k):
    rng = np.random.default_rng(E * 10 + k)
    x = random_stream(rng, 300, E, k, stay=float(rng.random()))
    starts = segments(rng, len(x))
    curve = lru_curve(x, starts, CurveState.empty(E))
    assert curve.shape == (E, len(COUNTERS))
    for capacity in range(1, E + 1):
        compiled = replay(x, starts, "lru", capacity, CacheState.empty(E, k))
        assert curve[capacity - 1].tolist() == compiled.tolist(), (E, k, capacity)
        if capacity in (1, k - 1, k, k + 1, E):  # the reference is slow: the capacities around k
            expected = replay_reference(x.tolist(), "lru", capacity, starts.tolist())
            assert dict(zip(COUNTERS, curve[capacity - 1].tolist())) == expected, (E, k, capacity)


def test_lru_curve_in_chunks_equals_one_pass():
    rng = np.random.default_rng(1)
    x = random_stream(rng, 500, 12, 3)
    starts = segments(rng, len(x))
    whole = lru_curve(x, starts, CurveState.empty(12))
    state, parts = CurveState.empty(12), np.zeros_like(whole)
    for lo, hi in [(0, 1), (1, 180), (180, 181), (181, 500)]:
        parts += lru_curve(x[lo:hi], starts[lo:hi], state)
    assert parts.tolist() == whole.tolist()


def test_next_use_distances_are_the_indices_as_distances():
    rng = np.random.default_rng(2)
    x = random_stream(rng, 400, 9, 3)
    starts = segments(rng, len(x), 0.02)
    indices, distances = next_use_indices(x, starts), next_use_distances(x, starts)
    assert distances.dtype == np.uint32 and distances.shape == (400 * 3,)
    a = np.arange(len(indices))
    assert np.array_equal(np.where(indices == NEVER, 0, indices - a), distances.astype(np.int64))
    # Fed backward in blocks with the carried `last`, the blocks concatenate to the whole.
    last, blocks = np.full(9, NEVER, np.int64), []
    for lo, hi in [(300, 400), (120, 300), (0, 120)]:
        blocks.insert(0, next_use_distances(x[lo:hi], starts[lo:hi], last, lo * 3))
    assert np.array_equal(np.concatenate(blocks), distances)


def test_belady_reads_distances_and_indices_alike():
    rng = np.random.default_rng(3)
    x = random_stream(rng, 300, 8, 2)
    starts = segments(rng, len(x))
    for capacity in (1, 2, 3, 5):
        by_index = replay(x, starts, "belady", capacity, CacheState.empty(8, 2), next_use_indices(x, starts))
        by_distance = replay(x, starts, "belady", capacity, CacheState.empty(8, 2), next_use_distances(x, starts))
        assert by_index.tolist() == by_distance.tolist()
    # In chunks, the distances sliced as the indices are.
    nu, state, parts = next_use_distances(x, starts), CacheState.empty(8, 2), np.zeros(5, np.int64)
    for lo, hi in [(0, 77), (77, 78), (78, 300)]:
        parts += replay(x[lo:hi], starts[lo:hi], "belady", 3, state, nu[2 * lo : 2 * hi])
    assert parts.tolist() == replay(x, starts, "belady", 3, CacheState.empty(8, 2), nu).tolist()


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize("E, k, dtype", [(16, 2, np.uint8), (33, 4, np.uint8), (300, 3, np.uint16)])
def test_every_policy_equals_the_reference_with_more_experts(policy, E, k, dtype):
    rng = np.random.default_rng(E + k)
    x = random_stream(rng, 160, E, k, stay=0.5, dtype=dtype)
    starts = segments(rng, len(x), 0.03)
    for capacity in sorted({1, k - 1, k, k + 1, 2 * k + 1, E // 2, E} - {0}):
        side = {}
        if policy == "pin":
            by_use = np.argsort(-np.bincount(x.reshape(-1).astype(np.int64), minlength=E), kind="stable")
            side["pinned"] = by_use[: max(0, min(3, max_pinned(capacity, k)))].tolist()
        if policy == "lookahead":
            guess = np.where(rng.random(x.shape) < 0.7, x.astype(np.int64), rng.integers(0, E, x.shape))
            guess = np.where(rng.random(x.shape) < 0.1, -1, guess)
            for j in range(1, k):  # no repeated id within a prediction
                repeated = (guess[:, j : j + 1] == guess[:, :j]).any(axis=1)
                guess[repeated, j] = -1
            side["predicted"] = guess.tolist()
        expected = replay_reference(x.tolist(), policy, capacity, starts.tolist(), **side)
        nu = next_use_distances(x, starts) if policy == "belady" else None
        predicted = np.asarray(side["predicted"]) if "predicted" in side else None
        got = replay(
            x, starts, policy, capacity, CacheState.empty(E, k), nu, pinned=side.get("pinned"), predicted=predicted
        )
        assert dict(zip(COUNTERS, got.tolist())) == expected, (policy, E, k, capacity)


@pytest.mark.parametrize("rows", [1, 7, 64, 1 << 15])
def test_belady_in_blocks_equals_belady_on_the_whole_streams_next_uses(rows):
    for seed in range(6):
        rng = np.random.default_rng(40 + seed)
        E = int(rng.integers(2, 20))
        k = int(rng.integers(1, min(E, 4) + 1))
        x = random_stream(rng, int(rng.integers(1, 300)), E, k)
        starts = segments(rng, len(x), 0.05)
        nu = next_use_distances(x, starts)
        for capacity in range(1, E + 1):
            whole = replay(x, starts, "belady", capacity, CacheState.empty(E, k), nu)
            assert replay_belady(x, starts, capacity, CacheState.empty(E, k), rows).tolist() == whole.tolist()
    # Carried across calls, as a longer stream fed in chunks: the state continues.
    state, parts = CacheState.empty(E, k), np.zeros(5, np.int64)
    half = len(x) // 2
    parts += replay(x[:half], starts[:half], "belady", 2, state, nu[: half * k])
    parts += replay(x[half:], starts[half:], "belady", 2, state, nu[half * k :])
    assert parts.tolist() == replay_belady(x, starts, 2, CacheState.empty(E, k), rows).tolist()


def test_next_use_checkpoints_are_the_carried_state_at_each_block():
    rng = np.random.default_rng(5)
    x = random_stream(rng, 250, 7, 2)
    starts = segments(rng, len(x))
    checkpoints = next_use_checkpoints(x, starts, 60)
    assert checkpoints.shape == (5, 7)
    last = np.full(7, NEVER, np.int64)
    for b in range(4, -1, -1):  # blocks fed backward, as next_use_distances carries `last`
        assert checkpoints[b].tolist() == last.tolist(), b
        next_use_distances(x[60 * b : 60 * (b + 1)], starts[60 * b : 60 * (b + 1)], last, 60 * b * 2)
