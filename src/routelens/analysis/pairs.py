"""Vectorised building blocks shared by the streaming analyses: top-k sets as bitmasks, pairs of
tokens within a document, counts per domain, dense document numbering across chunks.

Every function is pure and works on one chunk's arrays; the accumulators that call them keep
the few rows of state that cross a chunk boundary.
"""

from __future__ import annotations

import numpy as np


def mask_dtype(num_experts: int) -> tuple[np.dtype, int]:
    """Smallest unsigned dtype that holds one bit per expert, and how many words a set needs."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        bits = np.dtype(dtype).itemsize * 8
        if num_experts <= bits:
            return np.dtype(dtype), 1
    return np.dtype(np.uint64), -(-num_experts // 64)


def set_masks(choices, num_experts: int) -> np.ndarray:
    """Top-k sets as bitmasks: k arrays of expert ids (any common shape S) -> (W, *S) words with
    bit e set iff e was chosen. Sets then compare with one AND per word instead of k*k id tests."""
    dtype, words = mask_dtype(num_experts)
    out = np.zeros((words, *choices[0].shape), dtype=dtype)
    for e in choices:
        if words == 1:
            out[0] |= np.left_shift(dtype.type(1), e.astype(dtype))
        else:
            word, bit = e // 64, (e % 64).astype(np.uint64)
            for w in range(words):
                out[w] |= np.where(word == w, np.left_shift(np.uint64(1), bit), np.uint64(0))
    return out


def topk_mask(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """(n, L, k) expert ids -> (n, L, W) bitmask words (row-major, for gathering rows)."""
    masks = set_masks([experts[:, :, s] for s in range(experts.shape[2])], num_experts)  # (W, n, L)
    return np.ascontiguousarray(masks.transpose(1, 2, 0))


def tokens_last(a: np.ndarray, block: int = 4096) -> np.ndarray:
    """(n, m) -> contiguous (m, n), copied in blocks of rows (3x faster than one strided copy:
    each block stays in cache)."""
    n = a.shape[0]
    out = np.empty(a.shape[::-1], dtype=a.dtype)
    for lo in range(0, n, block):
        out[:, lo : lo + block] = a[lo : lo + block].T
    return out


def choices_last(experts: np.ndarray) -> np.ndarray:
    """(n, L, k) ids -> (k, L, n) view with tokens on the contiguous last axis."""
    n, L, k = experts.shape
    return tokens_last(experts.reshape(n, L * k)).reshape(L, k, n).transpose(1, 0, 2)


def layer_major(experts: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, L, k) ids -> first choices (L, n) and set masks (W, L, n), tokens on the last axis.

    Counting along a contiguous token axis is several times faster in numpy than reducing
    over axis 0 of a (tokens, layers) array.
    """
    et = choices_last(experts)  # (k, L, n)
    return et[0], set_masks(list(et), num_experts)


def sets_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Masks (W, ...) x (W, ...) -> (...) bool: do the two top-k sets share an expert?"""
    if len(a) == 1:
        return (a[0] & b[0]) != 0
    return ((a & b) != 0).any(axis=0)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits per element (numpy >= 2's bitwise_count)."""
    return np.bitwise_count(x)


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts of the runs of equal consecutive values, and the value of each run."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), values[:0]
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return starts, values[starts]


def count_by_domain(
    hits: np.ndarray, valid: np.ndarray, domain: np.ndarray, num_domains: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain counts of True over the valid tokens of a (L, m) boolean array.

    Tokens come in trace order, so a domain is a few contiguous runs; each run and layer is one
    `np.count_nonzero` over a contiguous slice. Returns (counts (D, L), valid tokens (D,)).
    """
    counts = np.zeros((num_domains, hits.shape[0]), dtype=np.int64)
    pairs = np.zeros(num_domains, dtype=np.int64)
    if len(valid) == 0:
        return counts, pairs
    hits = hits & valid  # (L, m)
    starts, dom = runs(domain)
    ends = np.append(starts[1:], len(valid))
    for a, b, d in zip(starts.tolist(), ends.tolist(), dom.tolist()):
        pairs[d] += np.count_nonzero(valid[a:b])
        for layer in range(hits.shape[0]):
            counts[d, layer] += np.count_nonzero(hits[layer, a:b])
    return counts, pairs


def pair_valid(doc_a: np.ndarray, pos_a: np.ndarray, doc_b: np.ndarray, pos_b: np.ndarray, d: int) -> np.ndarray:
    """Rows a and b form a pair at distance d: same document, position of b = position of a + d."""
    return (doc_a == doc_b) & (pos_b.astype(np.int64) - pos_a == d)


class DocNumbering:
    """Dense document numbers 0, 1, 2, ... in trace order, continued across chunk boundaries.

    doc_id values are only required to change between documents; a document that straddles two
    chunks keeps its number.
    """

    def __init__(self):
        self.count = 0  # documents numbered so far
        self._last: int | None = None  # doc_id of the last row seen

    def number(self, doc_id: np.ndarray) -> tuple[np.ndarray, bool]:
        """(n,) doc ids -> (n,) dense numbers, and whether the first row continues the last document."""
        if len(doc_id) == 0:
            return np.zeros(0, dtype=np.int64), False
        new = np.concatenate([[True], doc_id[1:] != doc_id[:-1]])
        continues = self._last is not None and int(doc_id[0]) == self._last
        if continues:
            new[0] = False
        dense = np.cumsum(new) - 1 + self.count  # first row: count-1 when continuing, else count
        self.count = int(dense[-1]) + 1
        self._last = int(doc_id[-1])
        return dense, continues
