"""Specialization of experts by part of speech: counts, shares, KL and the permutation test
checked against brute-force loops and against routing with a planted (or no) tag dependence."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.pos_specialization import (
    kl_from_overall,
    permutation_pvalues,
    shares_from_counts,
    tag_expert_counts,
)
from routelens.errors import RoutelensError
from tests.analysis.pos_planted import random_routing

T = 17


def brute_counts(experts, tags, E):
    n, L, _k = experts.shape
    out = np.zeros((L, T, E), np.int64)
    for i in range(n):
        for layer in range(L):
            for e in experts[i, layer]:
                out[layer, tags[i], e] += 1
    return out


def brute_kl(counts, layer, tag):
    q = counts[layer].sum(0) / counts[layer].sum()
    p = counts[layer, tag] / counts[layer, tag].sum()
    return sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_counts_shares_and_kl_match_brute_force():
    rng = np.random.default_rng(0)
    experts = random_routing(300, 3, 6, 2, rng)  # (n, L, k)
    tags = rng.choice([0, 3, 7, 12], size=300)
    counts = tag_expert_counts(experts, tags, T, 6)
    assert counts.shape == (3, T, 6)
    np.testing.assert_array_equal(counts, brute_counts(experts, tags, 6))
    totals = np.bincount(tags, minlength=T)
    shares = shares_from_counts(counts, totals)
    # Each present tag's shares sum to k; absent tags are NaN.
    np.testing.assert_allclose(shares[:, [0, 3, 7, 12]].sum(-1), 2.0)
    assert np.isnan(shares[:, 1]).all()
    kl = kl_from_overall(counts)
    for layer in range(3):
        for tag in (0, 3, 7, 12):
            assert kl[layer, tag] == pytest.approx(brute_kl(counts, layer, tag), rel=1e-12)
    assert np.isnan(kl[:, 1]).all()


def test_tag_always_on_one_expert_gives_full_share_and_smallest_p():
    rng = np.random.default_rng(1)
    n, L, E, k = 2000, 3, 8, 2
    experts = random_routing(n, L, E, k, rng)
    tags = rng.choice([7, 12, 15], size=n)  # NOUN, PUNCT, VERB
    punct = tags == 12
    # Plant: at layer 1 every PUNCT token has expert 5 among its top-2 (as first choice).
    experts[punct, 1, 0] = 5
    experts[punct, 1, 1] = np.where(experts[punct, 1, 1] == 5, 6, experts[punct, 1, 1])
    counts = tag_expert_counts(experts, tags, T, E)
    shares = shares_from_counts(counts, np.bincount(tags, minlength=T))
    assert shares[1, 12, 5] == 1.0
    B = 200
    kl, p = permutation_pvalues(experts, tags, T, E, permutations=B, seed=0)
    assert p[1, 12] == pytest.approx(1 / (B + 1))  # never reached by a shuffle
    assert kl[1, 12] > 10 * np.nanmax(kl[[0, 2]])


def test_tags_independent_of_routing_give_chance_shares_and_large_pvalues():
    rng = np.random.default_rng(2)
    n, L, E, k = 6000, 4, 8, 2
    experts = random_routing(n, L, E, k, rng)
    present = [0, 5, 7, 12, 15]
    tags = rng.choice(present, size=n)
    shares = shares_from_counts(tag_expert_counts(experts, tags, T, E), np.bincount(tags, minlength=T))
    # ~1200 tokens per tag: binomial sd of a share is sqrt(.25*.75/1200) ~ 0.0125.
    np.testing.assert_allclose(shares[:, present], k / E, atol=0.06)
    _, p = permutation_pvalues(experts, tags, T, E, permutations=200, seed=3)
    p = p[:, present]
    # Under the null p-values are ~uniform: 20 of them have mean ~0.5 and rarely one below 0.005.
    assert 0.3 < p.mean() < 0.7
    assert p.min() > 0.005


def test_unbalanced_but_tag_blind_router_is_not_called_specialized():
    """Load imbalance alone (expert 0 takes most tokens) must not make any tag look specialized."""
    rng = np.random.default_rng(4)
    n, E = 5000, 8
    first = rng.choice(E, size=n, p=[0.65] + [0.05] * 7)
    experts = first.reshape(n, 1, 1).astype(np.uint8)
    tags = rng.choice([7, 12], size=n)
    kl, p = permutation_pvalues(experts, tags, T, E, permutations=200, seed=0)
    shares = shares_from_counts(tag_expert_counts(experts, tags, T, E), np.bincount(tags, minlength=T))
    assert shares[0, 7].max() > 0.6  # a high max share, far above chance 1/8 ...
    assert p[0, [7, 12]].min() > 0.01  # ... but no evidence of a tag effect
    assert kl[0, 7] < 0.01


def test_permutation_test_is_seeded_and_rejects_zero_permutations():
    rng = np.random.default_rng(5)
    experts = random_routing(500, 2, 4, 1, rng)
    tags = rng.choice([1, 2], size=500)
    a = permutation_pvalues(experts, tags, T, 4, permutations=50, seed=9)[1]
    b = permutation_pvalues(experts, tags, T, 4, permutations=50, seed=9)[1]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(RoutelensError, match="permutations=0"):
        permutation_pvalues(experts, tags, T, 4, permutations=0)
