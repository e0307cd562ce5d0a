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
