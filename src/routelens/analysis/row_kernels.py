"""Compiled per-chunk counters that read the reader's (n, L, k) expert ids as they come, token-major:
no (k, L, n) transpose and no layer-major bitmasks are built for them. Each kernel runs its
layers in parallel (numba `prange`: every layer writes its own rows of the output, so no two
threads touch one cell) and releases the GIL, so the read-ahead thread decodes the next chunk
meanwhile.

- `token_rows_of`: first ids (n, L) and top-k bitmasks (n, L * W), what the pair kernels and the
  permutation null read (the layer-major `pairs.layer_major` path gives the same rows).
- `count_token_experts`: the three vocabulary tables (input token, shuffled token, next token)
  in one pass over the chunk.
- `count_slots`: the expert counts per resampling unit, layer and choice category of
  `distribution.DistributionAccumulator`.
- `count_coactivation`: pairs of choice ranks within a token's top-k (all, and adjacent ranks).
- `count_bits`: per-layer counts of 16-bit patterns (the float16 histograms of confidence).

The numpy accumulators they replace are the reference; tests/analysis/test_row_kernels.py holds
each kernel to it.
"""

from __future__ import annotations

import numba
import numpy as np

from routelens.analysis.pairs import mask_dtype

BLOCK = 2048  # tokens per block: a block's rows stay in cache while each layer of it is counted


def groups() -> int:
    """Layer groups run in parallel: one per numba thread."""
    return max(1, numba.get_num_threads())


@numba.njit(cache=True, nogil=True, inline="always")
def _layers(g, G, L):
    """Layers of group g of G: a contiguous range."""
    return g * L // G, (g + 1) * L // G


@numba.njit(cache=True, nogil=True, parallel=True)
def _token_rows(experts, first, mask, shift, words):
    n, L, k = experts.shape
    low = np.uint64((1 << shift) - 1)
    for i in numba.prange(n):
        row, m = experts[i], mask[i]
        for layer in range(L):
            first[i, layer] = row[layer, 0]
            for s in range(k):
                e = np.uint64(row[layer, s])
                m[layer * words + (e >> np.uint64(shift))] |= np.uint64(1) << (e & low)


def token_rows_of(experts: np.ndarray, num_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, L, k) ids -> first ids (n, L) and top-k bitmasks (n, L * W), token-major: the words of
    layer l are columns l * W .. l * W + W - 1 (as `locality.token_rows` lays them out)."""
    dtype, words = mask_dtype(num_ids)
    n, L, _ = experts.shape
    first = np.empty((n, L), dtype=experts.dtype)
    mask = np.zeros((n, L * words), dtype=dtype)
    _token_rows(np.ascontiguousarray(experts), first, mask, int(dtype.itemsize * 8).bit_length() - 1, words)
    return first, mask


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_token_experts(experts, token_in, token_null, token_next, counts_in, counts_null, counts_next, E, G):
    n, L, k = experts.shape
    for layer in numba.prange(L):  # not blocked: a layer's three tables (V * E cells each) stay in cache
        ci, cn, cx = counts_in[layer], counts_null[layer], counts_next[layer]
        for i in range(n):
            a, b, c = token_in[i] * E, token_null[i] * E, token_next[i] * E
            for s in range(k):
                e = np.int64(experts[i, layer, s])
                if a >= 0:
                    ci[a + e] += 1
                if b >= 0:
                    cn[b + e] += 1
                if c >= 0:
                    cx[c + e] += 1


def count_token_experts(experts, token_in, token_null, token_next, counts_in, counts_null, counts_next, E) -> None:
    """counts_* (L, V * E) += 1 at [layer, t * E + e] for every row i with t = token_*[i] >= 0 and e
    in row i's top-k at that layer; experts (n, L, k)."""
    _count_token_experts(experts, token_in, token_null, token_next, counts_in, counts_null, counts_next, E, groups())


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_slots(experts, slot, category, flat, L, C, E, G):
    n, _, k = experts.shape
    for g in numba.prange(G):
        l0, l1 = _layers(g, G, L)
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            for layer in range(l0, l1):
                for i in range(lo, hi):
                    base = (slot[i] * L + layer) * C
                    for s in range(k):
                        flat[(base + category[s]) * E + experts[i, layer, s]] += 1


def count_slots(experts, slot, category, per_slot) -> None:
    """per_slot (S, L, C, E) += 1 at [slot[i], layer, category[s], experts[i, layer, s]]."""
    S, L, C, E = per_slot.shape
    _count_slots(experts, slot, category, per_slot.reshape(-1), L, C, E, groups())  # a view: counts land in per_slot


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_coactivation(experts, ranked, adjacent, selected, G):
    n, L, k = experts.shape
    for g in numba.prange(G):
        l0, l1 = _layers(g, G, L)
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            for layer in range(l0, l1):
                rl, al, sl = ranked[layer], adjacent[layer], selected[layer]
                for i in range(lo, hi):
                    row = experts[i, layer]
                    for s in range(k):
                        a = row[s]
                        sl[a] += 1
                        for t in range(s + 1, k):
                            rl[a, row[t]] += 1
                        if k > 2 and s + 1 < k:
                            al[a, row[s + 1]] += 1


def count_coactivation(experts, ranked, adjacent, selected) -> None:
    """Per layer: selected (L, E) += each chosen id; ranked (L, E, E) += [a, b] for every pair of
    choice ranks s < t (a at s, b at t); adjacent (L, E, E) the same for t = s + 1 only, left
    untouched when k <= 2 (then it equals ranked). Both orders of a pair: ranked + ranked^T."""
    _count_coactivation(experts, ranked, adjacent, selected, groups())


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_bits(values, counts, G):
    n, L = values.shape
    for g in numba.prange(G):
        l0, l1 = _layers(g, G, L)
        for lo in range(0, n, BLOCK):
            hi = min(n, lo + BLOCK)
            for layer in range(l0, l1):
                row = counts[layer]
                for i in range(lo, hi):
                    row[values[i, layer]] += 1


def count_bits(values, counts) -> None:
    """values (n, L) uint16 (any strides), counts (L, 65536) += 1 per value."""
    _count_bits(values, counts, groups())
