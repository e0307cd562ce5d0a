"""The exact within-document permutation null against brute force over every permutation of
tiny documents, against the shuffling reference, and on a planted null equal to it."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from routelens.analysis.locality import PairCounter, PermutedCounter
from routelens.analysis.pairs import layer_major
from routelens.analysis.permutation_null import PermutationNull
from tests.analysis.planted import make_chunk, random_experts


def _brute(experts: np.ndarray) -> np.ndarray:
    """(n, L, k) one document -> (4, L): mean and variance over all n! orders of the consecutive
    first-expert repeats, then of the consecutive top-k overlaps."""
    n, L, _ = experts.shape
    hits = []
    for order in permutations(range(n)):
        e = experts[list(order)]
        same = (e[1:, :, 0] == e[:-1, :, 0]).sum(0)
        overlap = np.array([[bool(set(e[i, j]) & set(e[i + 1, j])) for j in range(L)] for i in range(n - 1)]).sum(0)
        hits.append((same, overlap))
    hits = np.array(hits, dtype=np.float64)  # (n!, 2, L)
    return np.stack([hits[:, 0].mean(0), hits[:, 0].var(0), hits[:, 1].mean(0), hits[:, 1].var(0)])


def _feed(counter, chunk, E: int, rows: int) -> None:
    for lo in range(0, len(chunk), rows):
        sl = slice(lo, lo + rows)
        counter.update(*layer_major(chunk.experts[sl], E), chunk.doc_id[sl], chunk.domain[sl])
    counter.finish()


# E = 5: the dense table of sets; E = 20: the distinct-set list; E = 70: two mask words.
@pytest.mark.parametrize("E,k", [(5, 1), (5, 2), (4, 3), (20, 2), (70, 3)])
def test_exact_null_equals_brute_force_over_every_permutation(E, k):
    rng = np.random.default_rng(E * 10 + k)
    lengths = [1, 2, 3, 6, 7, 5, 4]  # 7! orders at most
    L = 2
    experts = random_experts(sum(lengths), L, E, k, rng)
    # few distinct sets: ties in the first choice and in whole sets
    experts[:, :, :] = np.where(rng.random((len(experts), L, 1)) < 0.5, experts[:1], experts)
    chunk = make_chunk(lengths, experts, domain=np.repeat(np.arange(len(lengths)) % 2, lengths))
    null = PermutationNull(2, L, E)
    _feed(null, chunk, E, rows=4)  # documents straddle chunks
    want = np.zeros((2, 4, L))
    pairs = np.zeros(2)
    start = 0
    for j, n in enumerate(lengths):
        if n > 1:
            want[j % 2] += _brute(experts[start : start + n])
        pairs[j % 2] += n - 1
        start += n
    np.testing.assert_allclose(null.first, want[:, 0], atol=1e-9)
    np.testing.assert_allclose(null.var_first, want[:, 1], atol=1e-9)
    np.testing.assert_allclose(null.any, want[:, 2], atol=1e-9)
    np.testing.assert_allclose(null.var_any, want[:, 3], atol=1e-9)
    assert null.pairs.tolist() == pairs.tolist()
    mean_first, mean_any, sd_first, _ = null.shares()
    assert mean_first[2] == pytest.approx(want[:, 0].sum(0) / pairs.sum())  # pooled
    assert sd_first[2] == pytest.approx(np.sqrt(want[:, 1].sum(0)) / pairs.sum())
    if k == 1:
        np.testing.assert_allclose(mean_any, mean_first)


def test_planted_null_every_order_of_a_document_gives_the_real_locality_of_the_null():
    """Documents that are all n! orders of one multiset of tokens: their real locality, pooled,
    is the mean over orders, i.e. exactly the permutation null."""
    rng = np.random.default_rng(1)
    E, k, L, n = 6, 2, 3, 5
    base = random_experts(n, L, E, k, rng)
    base[3] = base[0]  # a repeated set
    orders = list(permutations(range(n)))
    experts = np.concatenate([base[list(o)] for o in orders])
    chunk = make_chunk([n] * len(orders), experts)
    real = PairCounter(1, L)
    real.update(*layer_major(experts, E), chunk.doc_id, chunk.position, chunk.domain)
    null = PermutationNull(1, L, E)
    _feed(null, chunk, E, rows=37)
    real_first, real_any, _ = real.shares()
    null_first, null_any, _, _ = null.shares()
    np.testing.assert_allclose(null_first[0], real_first[0, :, 0], rtol=1e-12)
    np.testing.assert_allclose(null_any[0], real_any[0, :, 0], rtol=1e-12)


def test_exact_null_is_the_mean_of_many_shuffles_within_its_monte_carlo_error():
    """P shuffles: their mean share differs from the expectation by about sd / sqrt(P) (the exact
    sd of one shuffle), so 4 sd / sqrt(P) bounds it (a false alarm about 1 in 16,000 per cell);
    their sample sd estimates the exact sd with relative error about 1 / sqrt(2 (P - 1))."""
    rng = np.random.default_rng(2)
    E, k, L, P = 8, 2, 4, 400
    lengths = rng.integers(2, 60, 80)
    experts = random_experts(int(lengths.sum()), L, E, k, rng)
    pref = np.repeat(rng.integers(0, E, len(lengths)), lengths)  # each document leans on one expert
    experts[:, :, 0] = np.where(rng.random((len(pref), L)) < 0.5, pref[:, None], experts[:, :, 0])
    experts[:, :, 1] = np.where(experts[:, :, 1] == experts[:, :, 0], (experts[:, :, 0] + 1) % E, experts[:, :, 1])
    chunk = make_chunk(lengths, experts)
    null, shuffled = PermutationNull(1, L, E), PermutedCounter(1, L, seed=0, permutations=P)
    _feed(null, chunk, E, rows=500)
    _feed(shuffled, chunk, E, rows=500)
    exact, got = null.shares(), shuffled.shares()
    for mean, sample_mean, sd, sample_sd in (
        (exact[0], got[0], exact[2], got[2]),
        (exact[1], got[1], exact[3], got[3]),
    ):
        assert np.all(np.abs(sample_mean - mean) < 4 * sd / np.sqrt(P))
        assert np.all(np.abs(sample_sd / sd - 1) < 4 / np.sqrt(2 * (P - 1)))
