"""The compiled counters that read (n, L, k) ids directly (analysis/row_kernels.py) against plain
numpy counts of the same rows, and the exact permutation null at large E (top-8 of 256, long
documents of mostly distinct sets) against the m^2 kernel it replaces and a brute-force degree
count, with its mean against many shuffles."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.locality import token_rows
from routelens.analysis.pairs import layer_major, mask_dtype
from routelens.analysis.permutation_null import PermutationNull, document_moments, document_moments_rows
from routelens.analysis.row_kernels import (
    count_bits,
    count_coactivation,
    count_slots,
    count_token_experts,
    token_rows_of,
)
from tests.analysis.planted import random_experts


@pytest.mark.parametrize("E,k", [(8, 2), (20, 3), (70, 4), (256, 8)])
def test_token_rows_equal_the_layer_major_rows(E, k):
    experts = random_experts(300, 3, E, k, np.random.default_rng(E))
    first, mask = token_rows_of(experts, E)
    want_first, want_mask = token_rows(*layer_major(experts, E))
    assert first.dtype == want_first.dtype and mask.dtype == want_mask.dtype
    np.testing.assert_array_equal(first, want_first)
    np.testing.assert_array_equal(mask, want_mask)


def test_vocabulary_slots_coactivation_and_bits_equal_numpy_counts():
    rng = np.random.default_rng(3)
    n, L, E, k, V = 5000, 5, 6, 3, 40
    experts = random_experts(n, L, E, k, rng)
    tokens = [rng.integers(-1, V, n).astype(np.int64) for _ in range(3)]  # -1: row left out
    counts = [np.zeros((L, V * E), np.int32) for _ in range(3)]
    count_token_experts(experts, *tokens, *counts, E)
    for token, got in zip(tokens, counts):
        want = np.zeros((L, V * E), np.int64)
        for layer in range(L):
            keep = token >= 0
            np.add.at(want[layer], (token[keep, None] * E + experts[keep, layer]).ravel(), 1)
        np.testing.assert_array_equal(got, want)
    slot = rng.integers(0, 7, n)
    category = np.minimum(np.arange(k), 2)
    per_slot = np.zeros((7, L, 3, E), np.int64)
    count_slots(experts, slot, category, per_slot)
    want = np.zeros_like(per_slot)
    for i in range(n):
        for layer in range(L):
            for s in range(k):
                want[slot[i], layer, category[s], experts[i, layer, s]] += 1
    np.testing.assert_array_equal(per_slot, want)
    ranked, adjacent, selected = (
        np.zeros((L, E, E), np.int64),
        np.zeros((L, E, E), np.int64),
        np.zeros((L, E), np.int64),
    )
    count_coactivation(experts, ranked, adjacent, selected)
    both, adjacent = ranked + ranked.transpose(0, 2, 1), adjacent + adjacent.transpose(0, 2, 1)  # k = 3
    wb, wa, ws = np.zeros_like(both), np.zeros_like(adjacent), np.zeros_like(selected)
    for layer in range(L):
        e = experts[:, layer].astype(np.int64)
        np.add.at(ws[layer], e.ravel(), 1)
        for s in range(k):
            for t in range(s + 1, k):
                for x, y in ((e[:, s], e[:, t]), (e[:, t], e[:, s])):
                    np.add.at(wb[layer], (x, y), 1)
                    if t == s + 1:
                        np.add.at(wa[layer], (x, y), 1)
    np.testing.assert_array_equal(both, wb)
    np.testing.assert_array_equal(adjacent, wa)
    np.testing.assert_array_equal(selected, ws)
    weights = rng.random((n, L, k)).astype(np.float16)
    bits = np.zeros((L, 1 << 16), np.int64)
    count_bits(weights[:, :, 0].view(np.uint16), bits)  # a strided view, as analyze passes it
    for layer in range(L):
        want = np.bincount(weights[:, layer, 0].view(np.uint16), minlength=1 << 16)
        np.testing.assert_array_equal(bits[layer], want)


def _degrees_brute(experts: np.ndarray) -> np.ndarray:
    """(n, k) one document and layer -> (4,) moments from every token's degree counted pairwise."""
    n = len(experts)
    sets = [set(row.tolist()) for row in experts]
    deg = np.array([sum(1 for j in range(n) if j != i and sets[i] & sets[j]) for i in range(n)], dtype=np.float64)
    H, P2 = deg.sum(), (deg * (deg - 1)).sum()
    mean = H / n
    var = mean + (H * H - 2 * H - 2 * P2) / (n * (n - 1.0)) - mean * mean
    f = experts[:, 0]
    c = np.bincount(f.astype(np.int64))
    Hf, P2f = (c * (c - 1.0)).sum(), (c * (c - 1.0) * (c - 2.0)).sum()
    mf = Hf / n
    vf = mf + (Hf * Hf - 2 * Hf - 2 * P2f) / (n * (n - 1.0)) - mf * mf
    return np.array([mf, vf, mean, var])


@pytest.mark.parametrize("E,k", [(256, 8), (64, 4), (12, 3)])
def test_large_e_null_equals_the_pairwise_kernel_and_brute_force(E, k):
    rng = np.random.default_rng(E + k)
    lengths = np.array([700, 1, 2, 333, 64])
    L = 2
    experts = random_experts(int(lengths.sum()), L, E, k, rng)
    experts[::7] = experts[3]  # repeated sets among mostly distinct ones
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dtype, words = mask_dtype(E)
    first, mask = token_rows_of(experts, E)
    dense = words == 1 and E <= 16
    got = document_moments_rows(first, mask, words, dtype.itemsize * 8, starts, E, dense, 3)
    lm_first, lm_mask = layer_major(experts, E)
    want = document_moments(np.ascontiguousarray(lm_first), np.ascontiguousarray(lm_mask), starts, E, dense)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    for d in (0, 3):
        for layer in range(L):
            brute = _degrees_brute(experts[starts[d] : starts[d + 1], layer])
            np.testing.assert_allclose(got[:, d, layer], brute, rtol=1e-12, atol=1e-9)


def test_large_e_null_mean_equals_many_shuffles_within_monte_carlo_error():
    """Top-8 of 256: the exact expectation of the consecutive overlaps of one 400-token document
    against 2000 shuffles (mean within 5 standard errors, the standard error from the exact sd)."""
    rng = np.random.default_rng(11)
    n, L, E, k, P = 400, 1, 256, 8, 2000
    experts = random_experts(n, L, E, k, rng)
    experts[::3] = experts[5]
    null = PermutationNull(1, L, E)
    first, mask = token_rows_of(experts, E)
    null.update_rows(first, mask, np.zeros(n, np.int64), np.zeros(n, np.int32))
    null.finish()
    sets = [set(row.tolist()) for row in experts[:, 0]]
    hits = np.empty(P)
    for p in range(P):
        order = rng.permutation(n)
        hits[p] = sum(bool(sets[a] & sets[b]) for a, b in zip(order[:-1], order[1:]))
    sd = np.sqrt(null.var_any[0, 0])
    assert abs(hits.mean() - null.any[0, 0]) < 5 * sd / np.sqrt(P)
    assert hits.std() == pytest.approx(sd, rel=0.1)
