"""Belady's next-use indices: for every request of a layer's stream, when its expert comes next.

Belady evicts the resident expert whose next request is farthest, so its replay needs, at each
access, the index of the next access of the same expert within the segment (document, under
reset-per-document). One backward pass gives them all. Two encodings of the same answer:

* `next_use_indices` / `next_use_block`: int64 absolute access indices, NEVER for none (the
  readable form, tested against a sort-based `next_use_indices_numpy` and brute force);
* `next_use_distances`: uint32 distances to the next access, 0 for none (int64 beyond 2^32
  requests): half the memory, and what `cache_kernels.replay` reads without conversion, as the
  spilled `next-{i}.bin` files already store it. This is the fast path Belady runs on.

Both passes walk tokens backward, k requests each, and test the segment start once per token
(not a division per request): ~0.1 s per 100M requests of uint32 distances on one core.
"""

from __future__ import annotations

import numba
import numpy as np

NEVER = np.int64(1) << 62  # next use of an expert that is never requested again (in its segment)


def next_use_indices(experts: np.ndarray, segment_start: np.ndarray, base: int = 0) -> np.ndarray:
    """For every access (tokens * k, in routing order), the index of the next access of the same
    expert within its segment, or NEVER. Indices count from `base` (the stream's first access).

    A compiled backward scan: O(accesses), and its only memory is the output (8 bytes per
    access). The vectorised form `next_use_indices_numpy` (a stable sort by expert) gives the
    same answer with ~3x the memory in temporaries; it is kept as the reference in tests.
    """
    experts = np.ascontiguousarray(experts)
    num_experts = int(experts.max()) + 1 if experts.size else 1
    return next_use_block(experts, segment_start, np.full(num_experts, NEVER, np.int64), base)


def next_use_block(experts: np.ndarray, segment_start: np.ndarray, last: np.ndarray, base: int) -> np.ndarray:
    """`next_use_indices` of one block of a longer stream, blocks fed from the last to the first.

    `last` (E,) int64 carries, from the blocks after this one, the index of each expert's next
    access (NEVER at first) and is updated in place; `base` is the index of the block's first
    access in the whole stream. Concatenating the blocks' outputs gives `next_use_indices` of
    the whole stream, so a stream on disk is scanned with memory for one block.
    """
    experts = np.ascontiguousarray(experts)
    T, k = experts.shape
    assert experts.size == 0 or int(experts.max()) < len(last), "expert id beyond len(last)"
    out = np.empty(T * k, np.int64)
    _backward(experts, np.ascontiguousarray(segment_start, dtype=np.bool_), last, base, False, out)
    return out


def next_use_distances(
    experts: np.ndarray,
    segment_start: np.ndarray,
    last: np.ndarray | None = None,
    base: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`next_use_indices` as distances: out[a] = next access index - a, 0 when there is none.

    uint32 when the distances fit (streams of fewer than 2^32 - 1 requests), else uint64 (an
    unsigned type either way: `cache_kernels.replay` reads int64 as absolute indices). With
    `last` and `base` it is one block of a longer stream fed backward, as `next_use_block`
    (`last` holds absolute indices, NEVER for none, and is updated in place); `out`, if given,
    receives the distances (a buffer reused from block to block).
    """
    experts = np.ascontiguousarray(experts)
    T, k = experts.shape
    if last is None:
        last = np.full(int(experts.max()) + 1 if experts.size else 1, NEVER, np.int64)
    assert experts.size == 0 or int(experts.max()) < len(last), "expert id beyond len(last)"
    if out is None:
        out = np.empty(T * k, distance_dtype(base + T * k))
    wide_enough = out.dtype.itemsize >= distance_dtype(base + T * k).itemsize
    assert out.shape == (T * k,) and out.dtype in (np.uint32, np.uint64) and wide_enough, (out.shape, out.dtype)
    _backward(experts, np.ascontiguousarray(segment_start, dtype=np.bool_), last, base, True, out)
    return out


def next_use_checkpoints(experts: np.ndarray, segment_start: np.ndarray, rows: int) -> np.ndarray:
    """The `last` that `next_use_distances` carries into each block of `rows` tokens, blocks fed
    backward: (blocks, E) int64, row b for tokens b*rows.. (absolute indices, NEVER for none).

    One backward pass that writes nothing per request, so that Belady can then compute each
    block's distances just before replaying it, into a buffer that stays in cache, instead of
    holding 4 bytes per request of the whole stream (`belady.replay_belady`).
    """
    experts = np.ascontiguousarray(experts)
    T = len(experts)
    E = int(experts.max()) + 1 if experts.size else 1
    out = np.empty((max(1, -(-T // rows)), E), np.int64)
    _checkpoints(experts, np.ascontiguousarray(segment_start, dtype=np.bool_), rows, out)
    return out


def distance_dtype(requests: int) -> np.dtype:
    """The narrowest type that holds every distance of a stream of `requests` requests."""
    return np.dtype(np.uint32 if requests < (1 << 32) - 1 else np.uint64)


@numba.njit(cache=True, nogil=True)
def _backward(experts, segment_start, last, base, distances, out):
    T, k = experts.shape
    E = last.shape[0]
    flat = experts.reshape(-1)
    ahead = np.empty(E, np.int64)  # the block-local index of e's next access, -1 for none
    for e in range(E):
        ahead[e] = last[e] - base if last[e] != NEVER else -1
    i = T * k - 1  # counted down with t: no index arithmetic per request
    for back in range(T):
        for _ in range(k):
            e = flat[i]
            a = ahead[e]
            if distances:
                out[i] = a - i if a >= 0 else 0
            else:
                out[i] = a + base if a >= 0 else NEVER
            ahead[e] = i
            i -= 1
        if segment_start[T - 1 - back]:  # nothing before a segment start may see a use inside it
            for e in range(E):
                ahead[e] = -1
    for e in range(E):
        last[e] = ahead[e] + base if ahead[e] >= 0 else NEVER


@numba.njit(cache=True, nogil=True)
def _checkpoints(experts, segment_start, rows, out):
    T, k = experts.shape
    E = out.shape[1]
    last = np.full(E, NEVER, np.int64)
    for b in range(out.shape[0] - 1, -1, -1):
        for e in range(E):
            out[b, e] = last[e]
        t = min(T, (b + 1) * rows) - 1
        while t >= b * rows:
            for j in range(k):
                last[experts[t, j]] = t * k + j  # a token's experts are distinct: any order
            if segment_start[t]:
                for e in range(E):
                    last[e] = NEVER
            t -= 1


def next_use_indices_numpy(experts: np.ndarray, segment_start: np.ndarray, base: int = 0) -> np.ndarray:
    """Vectorised next-use: stable-sort the accesses by (segment, expert); neighbours in that order
    with the same key are consecutive uses."""
    T, k = experts.shape
    flat = experts.reshape(-1).astype(np.int64)
    segment = np.repeat(np.cumsum(segment_start) - 1, k)  # (tokens * k,)
    key = segment * (int(flat.max(initial=0)) + 1) + flat
    order = np.argsort(key, kind="stable")
    same = key[order[1:]] == key[order[:-1]]
    out = np.full(T * k, NEVER, np.int64)
    out[order[:-1][same]] = order[1:][same] + base
    return out
