"""Co-activation against a per-token loop, and its planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.coactivation import CoactivationAccumulator
from tests.analysis.planted import brute_coactivation, random_experts


@pytest.mark.parametrize("E,k", [(6, 2), (7, 3), (5, 1)])
def test_coactivation_matches_brute_force(E, k):
    rng = np.random.default_rng(E * k)
    experts = random_experts(120, 2, E, k, rng)
    experts[:40, 0] = experts[0, 0]  # a frequent pair
    acc = CoactivationAccumulator(2, E)
    for lo in range(0, 120, 50):
        acc.update(experts[lo : lo + 50])
    np.testing.assert_allclose(acc.result(), brute_coactivation(experts, E))
    if k == 1:
        assert not acc.result().any()


def test_planted_pairs_always_coactivate():
    # experts 2j and 2j+1 always chosen together: C[2j, 2j+1] = 1, every other pair 0
    rng = np.random.default_rng(0)
    j = rng.integers(0, 4, size=500)
    experts = np.stack([2 * j, 2 * j + 1], axis=1)[:, None, :].astype(np.uint8)  # (n, 1, 2)
    acc = CoactivationAccumulator(1, 8)
    acc.update(experts)
    want = np.zeros((8, 8))
    for a in range(4):
        want[2 * a, 2 * a + 1] = want[2 * a + 1, 2 * a] = 1.0
    np.testing.assert_allclose(acc.result()[0], want)


def test_adjacent_rank_variant_counts_consecutive_ranks_only():
    """Ranks (0, 1, 2) of top-3: all pairs gives 3 pairs per token, adjacent ranks 2 (0-1, 1-2).
    Planted: expert 0 first, 1 second, 2 third always: C_all[0, 2] = 1, C_adjacent[0, 2] = 0."""
    n = 50
    experts = np.tile(np.array([0, 1, 2], np.uint8), (n, 1))[:, None, :]  # (n, 1, 3)
    acc = CoactivationAccumulator(1, 4)
    acc.update(experts)
    all_pairs, adjacent = acc.result()[0], acc.result(adjacent=True)[0]
    assert all_pairs[0, 2] == 1.0 and adjacent[0, 2] == 0.0
    assert adjacent[0, 1] == adjacent[1, 2] == adjacent[2, 1] == 1.0
    rng = np.random.default_rng(0)
    two = random_experts(200, 2, 6, 2, rng)
    acc = CoactivationAccumulator(2, 6)
    acc.update(two)
    np.testing.assert_array_equal(acc.result(adjacent=True), acc.result())  # k = 2: the same


def test_adjacent_rank_variant_matches_brute_force():
    rng = np.random.default_rng(9)
    E, k, n = 7, 4, 300
    experts = random_experts(n, 2, E, k, rng)
    acc = CoactivationAccumulator(2, E)
    acc.update(experts)
    both = np.zeros((2, E, E))
    single = np.zeros((2, E))
    for t in range(n):
        for layer in range(2):
            chosen = experts[t, layer].tolist()
            for e in chosen:
                single[layer, e] += 1
            for r in range(k - 1):
                a, b = chosen[r], chosen[r + 1]
                both[layer, a, b] += 1
                both[layer, b, a] += 1
    np.testing.assert_allclose(acc.result(adjacent=True), both / single[:, :, None])
