"""LRU's hit curve: the counters of every capacity 1..E from one pass over a layer's stream.

Per-layer budgets (`budget.py`) need each layer's hits at every capacity, which is E replays of
the stream when each capacity is replayed alone. LRU needs one: it is a *stack* policy, under
both of the simulator's rules (docs/simulate.md), so what a cache of C experts holds is fixed by
the order of last accesses alone:

* capacity >= k: after every token the cache holds the C most recently accessed experts of the
  segment (by induction: a token's k experts become the most recent, and each miss evicts the
  least recent resident, never one of the token's). So a request is a hit iff, on the token's
  arrival, fewer than C experts were accessed more recently than its expert: its *rank* p.
* capacity < k: requests are served one by one, classic demand paging, where LRU holds the C most
  recently requested experts; a request's distance is p plus the token's earlier requests whose
  experts were not already above it (ranked lower, or never seen).

A histogram of ranks (and of distances) gives every capacity's hits at once; cold misses (first
requests of an expert in its segment) are the same at every capacity. Tested equal, counter by
counter, to `cache_kernels.replay` and to the plain-Python reference at each capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from routelens.simulate.cache_kernels import COLD_MISSES, HITS, MISSES, NUM_COUNTERS


@dataclass
class CurveState:
    """What `lru_curve` carries from one chunk of a layer's stream to the next."""

    recency: np.ndarray  # (E,) int64, clock of the last access in this segment, -1 if none
    scalars: np.ndarray  # (1,) int64: the clock

    @classmethod
    def empty(cls, num_experts: int) -> CurveState:
        return cls(recency=np.full(num_experts, -1, np.int64), scalars=np.zeros(1, np.int64))


def lru_curve(experts: np.ndarray, segment_start: np.ndarray, state: CurveState) -> np.ndarray:
    """LRU's counters at every capacity 1..E: (E, NUM_COUNTERS) int64, row c - 1 for capacity c,
    the same as `replay(experts, segment_start, "lru", c, ...)` for each c, in one pass.

    `segment_start` as for `replay`; `state` (updated in place) carries a stream across chunks.
    """
    assert experts.ndim == 2 and len(segment_start) == len(experts), (experts.shape, segment_start.shape)
    E = len(state.recency)
    assert experts.size == 0 or int(experts.max()) < E, "expert id beyond the state's E"
    T, k = experts.shape
    rank = np.zeros(E + 1, np.int64)  # requests by rank on arrival (E: never seen in the segment)
    distance = np.zeros(E + 1, np.int64)  # requests by distance when served one by one (E: E or more)
    cold = _curve(
        np.ascontiguousarray(experts),
        np.ascontiguousarray(segment_start, dtype=np.bool_),
        state.recency,
        state.scalars,
        rank,
        distance,
    )
    capacity = np.arange(1, E + 1)
    out = np.zeros((E, NUM_COUNTERS), np.int64)
    out[:, HITS] = np.where(capacity >= k, np.cumsum(rank)[:E], np.cumsum(distance)[:E])
    out[:, MISSES] = T * k - out[:, HITS]
    out[:, COLD_MISSES] = cold
    return out


@numba.njit(cache=True, nogil=True)
def _curve(experts, segment_start, recency, scalars, rank, distance):
    T, k = experts.shape
    E = recency.shape[0]
    clock = scalars[0]
    ranks = np.empty(k, np.int64)
    cold = 0
    for t in range(T):
        if segment_start[t]:
            for e in range(E):
                recency[e] = -1
        for j in range(k):
            last = recency[experts[t, j]]
            above = 0
            for v in range(E):  # a branch-free count, which numba's LLVM vectorises
                above += recency[v] > last
            p = above if last >= 0 else E
            cold += last < 0
            ranks[j] = p
            rank[p] += 1
            d = p
            for i in range(j):
                d += ranks[i] > p
            distance[min(d, E)] += 1
        for j in range(k):
            clock += 1
            recency[experts[t, j]] = clock
    scalars[0] = clock
    return cold
