"""The compiled pair counting of PairCounter against a per-pair Python loop: domains, windows,
strides, resampling units and chunk boundaries together."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.locality import PairCounter, UnitPairCounts
from routelens.analysis.pairs import layer_major
from tests.analysis.planted import make_chunk, random_experts


def _loop(chunk, D, L, dmax, stride, window, units):
    e, doc, pos, dom = chunk.experts, chunk.doc_id, chunk.position, chunk.domain
    first, any_ = np.zeros((D, L, dmax), np.int64), np.zeros((D, L, dmax), np.int64)
    pairs, cut = np.zeros((D, dmax), np.int64), np.zeros((D, dmax), np.int64)
    uf, ua, up = (
        np.zeros((units.max() + 1, L), np.int64),
        np.zeros((units.max() + 1, L), np.int64),
        np.zeros(units.max() + 1, np.int64),
    )
    for a in range(0, len(doc), stride):
        for d in range(1, dmax + 1):
            b = a + d
            if b >= len(doc) or doc[a] != doc[b] or pos[b] - pos[a] != d:
                continue
            if window and pos[a] // window != pos[b] // window:
                cut[dom[a], d - 1] += 1
                continue
            pairs[dom[a], d - 1] += 1
            up[units[a]] += d == 1
            for layer in range(L):
                same = e[a, layer, 0] == e[b, layer, 0]
                meet = bool(set(e[a, layer]) & set(e[b, layer]))
                first[dom[a], layer, d - 1] += same
                any_[dom[a], layer, d - 1] += meet
                if d == 1:
                    uf[units[a], layer] += same
                    ua[units[a], layer] += meet
    return first, any_, pairs, cut, uf, ua, up


@pytest.mark.parametrize(
    "dmax,stride,window,rows,E", [(1, 1, 0, 13, 8), (4, 3, 5, 7, 8), (6, 2, 4, 1, 70), (3, 1, 3, 50, 20)]
)
def test_compiled_pair_counts_equal_a_per_pair_loop(dmax, stride, window, rows, E):
    rng = np.random.default_rng(dmax + stride + window)
    L, k = 3, 2
    lengths = rng.integers(1, 15, 30)
    experts = random_experts(int(lengths.sum()), L, E, k, rng)
    experts[1:, :, 0] = np.where(rng.random((len(experts) - 1, L)) < 0.4, experts[:-1, :, 0], experts[1:, :, 0])
    chunk = make_chunk(lengths, experts, domain=np.repeat(np.arange(len(lengths)) % 3, lengths))
    unit = np.repeat(rng.integers(0, 5, len(lengths)), lengths)
    units = UnitPairCounts(5, L)
    counter = PairCounter(3, L, max_distance=dmax, stride=stride, window=window, units=units)
    for lo in range(0, len(chunk), rows):
        sl = slice(lo, lo + rows)
        counter.update(*layer_major(experts[sl], E), chunk.doc_id[sl], chunk.position[sl], chunk.domain[sl], unit[sl])
    first, any_, pairs, cut, uf, ua, up = _loop(chunk, 3, L, dmax, stride, window, unit)
    np.testing.assert_array_equal(counter.first, first)
    np.testing.assert_array_equal(counter.any, any_)
    np.testing.assert_array_equal(counter.pairs, pairs)
    np.testing.assert_array_equal(counter.straddling, cut)
    if stride == 1:  # units count d = 1 pairs on every anchor
        np.testing.assert_array_equal(units.first[: len(uf)], uf)
        np.testing.assert_array_equal(units.any[: len(ua)], ua)
        np.testing.assert_array_equal(units.pairs[: len(up)], up)
