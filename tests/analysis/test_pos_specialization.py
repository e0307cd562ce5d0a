"""Specialization of experts by part of speech: counts, shares, KL and the permutation test
checked against brute-force loops and against routing with a planted (or no) tag dependence."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.pos_specialization import (
    kl_from_overall,
    permutation_test,
    shares_from_counts,
    tag_expert_counts,
)
from routelens.errors import RoutelensError
from tests.analysis.pos_planted import random_routing

T = 17


def permutation_pvalues(*args, **kwargs):
    """(observed KL, Monte-Carlo permutation p-values) of `permutation_test`."""
    test = permutation_test(*args, **kwargs)
    return test.observed, test.p_permutation


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


# -- issue 12: document-clustered nulls, corrections, reachability, intervals -----------------
def clustered_null(seed: int, docs: int = 60, per_doc: int = 12, L: int = 2, E: int = 8, k: int = 2):
    """Each document has a topic that sets both its tag mix and its routing; within a document
    the tag and the routing are independent. A corpus-wide shuffle mistakes the topic for a tag
    effect; the within-document shuffle must not."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 2, docs)
    doc = np.repeat(np.arange(docs), per_doc)
    n = len(doc)
    noun_prob = np.where(topic[doc] == 1, 0.8, 0.2)
    tags = np.where(rng.random(n) < noun_prob, 7, 15)  # NOUN or VERB
    experts = random_routing(n, L, E, k, rng)
    moved = (topic[doc] == 1) & (rng.random(n) < 0.7)  # topic 1 prefers experts 4..7
    experts[moved] = (experts[moved] % 4) + 4
    experts[moved, :, 1] = np.where(
        experts[moved, :, 1] == experts[moved, :, 0], 4 + (experts[moved, :, 0] - 3) % 4, experts[moved, :, 1]
    )
    return experts, tags, doc


def test_document_clustered_null_gives_uniform_pvalues_within_documents():
    from scipy.stats import kstest

    from routelens.analysis.pos_specialization import permutation_test

    within, across, mc = [], [], []
    for seed in range(50):
        experts, tags, doc = clustered_null(seed)
        assert len(np.unique(experts[0, 0])) == 2  # distinct top-2 experts
        t = permutation_test(experts, tags, T, 8, groups=doc, permutations=200, seed=seed)
        within.append(t.p_value[:, [7, 15]].ravel())
        mc.append(t.p_permutation[:, [7, 15]].ravel())
        across.append(permutation_test(experts, tags, T, 8, permutations=200, seed=seed).p_value[:, [7, 15]].ravel())
    within, across, mc = np.concatenate(within), np.concatenate(across), np.concatenate(mc)
    # 200 p-values (50 seeds x 2 layers x 2 tags; NOUN and VERB of a layer are near-duplicates,
    # so ~100 independent ones): at most ~alpha discoveries, with room for chance.
    assert np.mean(within < 0.05) <= 0.10
    assert np.mean(mc < 0.05) <= 0.10
    assert kstest(within[::2], "uniform").pvalue > 0.001  # one tag per layer: closer to independent
    # The corpus-wide shuffle (the old test) calls the topic a tag effect nearly always.
    assert np.mean(across < 0.05) > 0.8


def test_within_group_permutation_keeps_every_group_tag_multiset():
    from routelens.analysis.pos_specialization import within_group_permuter

    rng = np.random.default_rng(0)
    groups = rng.permutation(np.repeat(np.arange(30), 5))  # groups interleaved, not sorted
    perm = within_group_permuter(groups, len(groups), rng)()
    assert sorted(perm.tolist()) == list(range(len(groups)))
    assert (groups[perm] == groups).all()  # every row takes a value from its own group
    assert (perm != np.arange(len(groups))).mean() > 0.5


def brute_bh(p):
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def brute_holm(p):
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p[i] * (m - rank)))
        adj[i] = running
    return adj


def test_corrections_match_their_definitions_and_skip_untested_cells():
    from routelens.analysis.pos_specialization import adjust_pvalues

    rng = np.random.default_rng(3)
    p = rng.random((4, 6)) ** 3
    p[1, 2] = np.nan  # not a test
    flat = p[np.isfinite(p)]
    for method, brute in (("fdr_bh", brute_bh), ("holm", brute_holm)):
        got = adjust_pvalues(p, method)
        assert np.isnan(got[1, 2])
        np.testing.assert_allclose(got[np.isfinite(p)], brute(flat), rtol=1e-12)
        assert (got[np.isfinite(p)] >= flat - 1e-15).all()
    np.testing.assert_array_equal(adjust_pvalues(p, "none")[np.isfinite(p)], flat)
    with pytest.raises(ValueError):
        adjust_pvalues(p, "bonferroni-ish")


def test_one_planted_effect_among_272_tests_is_significant_after_correction():
    """OLMoE's shape has 16 layers x 17 tags = 272 tests: with 500 shuffles the Monte-Carlo p
    cannot go below 1/501 > 0.05/272, so only the moment-matched p makes the planted cell reachable."""
    from routelens.analysis.pos_specialization import adjust_pvalues, permutation_test

    rng = np.random.default_rng(7)
    n, L, E, k = 3400, 16, 8, 2
    doc = np.repeat(np.arange(n // 10), 10)
    tags = rng.integers(0, T, n)
    experts = random_routing(n, L, E, k, rng)
    verb = (tags == 15) & (rng.random(n) < 0.5)  # half the VERBs take expert 5 first at layer 9
    experts[verb, 9, 0] = 5
    experts[verb, 9, 1] = np.where(experts[verb, 9, 1] == 5, 6, experts[verb, 9, 1])
    t = permutation_test(experts, tags, T, E, groups=doc, permutations=500, seed=0)
    assert t.p_permutation.min() >= 1 / 501
    for method in ("fdr_bh", "holm"):
        adjusted = adjust_pvalues(t.p_value, method)
        significant = np.argwhere(adjusted <= 0.05)
        assert significant.tolist() == [[9, 15]], method
        assert adjust_pvalues(t.p_permutation, method)[9, 15] > 0.05  # the Monte-Carlo p could not


def test_max_share_interval_covers_the_estimate_and_narrows_with_documents():
    from routelens.analysis.pos_specialization import share_intervals

    widths = []
    for docs in (40, 640):
        rng = np.random.default_rng(docs)
        doc = np.repeat(np.arange(docs), 10)
        n = len(doc)
        tags = rng.choice([7, 15], n)
        experts = random_routing(n, 1, 8, 1, rng)
        experts[(tags == 7) & (rng.random(n) < 0.5), 0, 0] = 3
        shares = shares_from_counts(tag_expert_counts(experts, tags, T, 8), np.bincount(tags, minlength=T))
        best = np.argmax(np.nan_to_num(shares, nan=-1.0), axis=-1)
        low, high = share_intervals(experts, tags, doc, best, T, replicates=300, seed=0)
        point = shares[0, 7, best[0, 7]]
        assert best[0, 7] == 3 and low[0, 7] <= point <= high[0, 7]
        assert low[0, 7] < 0.5 + 0.5 / 8 < high[0, 7] or docs == 40  # true share 0.5625 covered (large n)
        widths.append(high[0, 7] - low[0, 7])
    assert widths[1] < widths[0] / 2.5  # 16x the documents: about 4x narrower
