"""Bitmask top-k sets, per-domain sums and document numbering against plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.pairs import (
    DocNumbering,
    count_by_domain,
    layer_major,
    popcount,
    sets_overlap,
    topk_mask,
)
from tests.analysis.planted import random_experts


@pytest.mark.parametrize("E,k", [(8, 2), (16, 3), (64, 8), (256, 8), (300, 4), (5, 1)])
def test_topk_mask_holds_exactly_the_chosen_experts(E, k):
    rng = np.random.default_rng(E + k)
    experts = random_experts(50, 3, E, k, rng).astype(np.uint16 if E > 256 else np.uint8)
    mask = topk_mask(experts, E)  # (n, L, W)
    assert mask.shape[:2] == (50, 3)
    assert popcount(mask).sum(axis=2).tolist() == np.full((50, 3), k).tolist()
    for t in range(50):
        for layer in range(3):
            bits = [
                e for e in range(E) if (int(mask[t, layer, e // (mask.itemsize * 8)]) >> (e % (mask.itemsize * 8))) & 1
            ]
            assert bits == sorted(experts[t, layer].tolist())


@pytest.mark.parametrize("E,k", [(8, 2), (300, 5)])
def test_sets_overlap_matches_set_intersection(E, k):
    rng = np.random.default_rng(1)
    a, b = random_experts(200, 2, E, k, rng), random_experts(200, 2, E, k, rng)
    (fa, ma), (fb, mb) = layer_major(a, E), layer_major(b, E)  # (L, n), (W, L, n)
    got = sets_overlap(ma, mb).T  # (n, L)
    assert (fa == a[:, :, 0].T).all() and (fb == b[:, :, 0].T).all()
    row_major = sets_overlap(topk_mask(a, E).transpose(2, 0, 1), topk_mask(b, E).transpose(2, 0, 1))
    assert (row_major == got).all()
    want = [[bool(set(a[i, j].tolist()) & set(b[i, j].tolist())) for j in range(2)] for i in range(200)]
    assert got.tolist() == want
    assert 0 < got.mean() < 1  # both outcomes exercised


def test_count_by_domain_matches_masked_sums():
    rng = np.random.default_rng(2)
    hits = rng.random((4, 300)) < 0.4  # (L, m)
    valid = rng.random(300) < 0.8
    domain = np.sort(rng.integers(0, 3, 300))[::-1].copy()  # runs, in an order other than 0, 1, 2
    domain[:10] = 0  # and a domain in two runs
    counts, pairs = count_by_domain(hits, valid, domain, 4)
    for d in range(4):
        sel = valid & (domain == d)
        assert counts[d].tolist() == hits[:, sel].sum(axis=1).tolist()
        assert pairs[d] == sel.sum()


def test_doc_numbering_continues_a_document_across_chunks():
    numbering = DocNumbering()
    a, cont_a = numbering.number(np.array([7, 7, 9, 9, 9]))
    b, cont_b = numbering.number(np.array([9, 4, 4]))
    c, cont_c = numbering.number(np.array([5]))
    assert (a.tolist(), cont_a) == ([0, 0, 1, 1, 1], False)
    assert (b.tolist(), cont_b) == ([1, 2, 2], True)
    assert (c.tolist(), cont_c) == ([3], False)
    assert numbering.count == 4
