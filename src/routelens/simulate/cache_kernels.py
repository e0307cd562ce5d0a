"""Compiled replay of one layer's expert stream through a fixed-size expert cache.

This is the fast path of the cache simulator: arrays in, counters out, no trace and no I/O.
`replay` runs one policy (LRU, LFU, Belady, prefetch, pin, lookahead) at one capacity over a
stream of tokens `(tokens, k)`, carrying the cache state in a `CacheState` so that a stream can
be fed chunk by chunk. The rules (docs/simulate.md gives them in full):

* a token's k experts are requested together, in routing order (first choice first); the
  experts cached on arrival are hits; the others are loaded in routing order;
* a load into a full cache evicts the policy's victim among cached experts this token does not
  use (there is always one when capacity >= k);
* below k (capacity < k) a token's experts cannot all be resident, so its requests are served one
  by one in routing order, as classic demand paging: a hit only if resident when served, the
  victim chosen among all resident experts. Belady is the fewest-misses policy among those that
  load only on demand, on both sides; a prefetching policy is not bound by it (it can hit more
  by loading more), so compare policies on hits and loads together;
* recency is a clock that ticks once per access (and once per prefetch load), so no two
  accesses tie; LFU counts every access since the start of the segment (ties: least recent);
  Belady evicts the farthest next use (ties, only between never-used-again experts: least recent);
* the prefetch policy is LRU plus, after each token, loading ahead of time the experts of the
  token that followed the last token led by this token's first choice (see docs/simulate.md);
* pin reserves slots for a given set of experts (the layer's most used): each is loaded on its
  first request into its own slot and never evicted; LRU manages the other capacity - pins
  slots, which must hold a whole token's k experts (one, below k: `max_pinned`), so every miss
  still finds a slot and pin stays a demand-paging policy;
* lookahead is LRU plus, before each token, loading the experts given for it in `predicted`
  (an earlier layer's router applied ahead of time, recorded by `routelens trace --lookahead`).

Why it is fast (benchmarks/bench_simulate.py times every policy against a loop that only reads
the stream): one compiled kernel per policy (the policy is a compile-time constant of an inlined
body, so no event pays a branch on it); the hot loop written out whole (an inlined helper per
event kept arrays' reference counts in the loop: ~40% slower); the resident experts kept in a
list of at most `capacity` ids, so a victim is found among the resident experts, not all E; an
expert's booleans as bits of one byte; counters in registers; for the LRU family no protection
test at all, since a token's own experts are always the most recent when one of them misses,
and for LFU and Belady the token's keys set aside while it loads rather than a test per
candidate. Belady reads its next uses as uint32 distances (`next_use.next_use_distances`, 4
bytes per request). The plain-Python `reference.py` is the specification it is tested against,
on random streams, policy by policy; LRU's curve over every capacity is one pass (`curve.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from routelens.simulate.next_use import NEVER
from routelens.simulate.next_use import next_use_block as next_use_block  # re-exported: the kernels' API
from routelens.simulate.next_use import next_use_distances as next_use_distances
from routelens.simulate.next_use import next_use_indices as next_use_indices
from routelens.simulate.next_use import next_use_indices_numpy as next_use_indices_numpy
from routelens.simulate.policies import POLICY_CODE, Policy

LRU, LFU, BELADY, PREFETCH, PIN, LOOKAHEAD = (POLICY_CODE[p] for p in Policy)
_FAR = np.int64(np.iinfo(np.int64).max)  # a key no expert has
_LAST_CLOCK = np.int64(1) << 61  # clocks stay below it (2^61 accesses), so Belady keys fit in int64
_CACHED, _SEEN, _PREFETCHED, _PINNED = 1, 2, 4, 8  # bits of an expert's flags in the replay loop

# Counter slots returned by `replay` (and accumulated across chunks).
HITS, MISSES, COLD_MISSES, PREFETCH_LOADS, PREFETCH_USEFUL = range(5)
NUM_COUNTERS = 5


@dataclass
class CacheState:
    """Everything a replay carries from one chunk of a layer's stream to the next."""

    cached: np.ndarray  # (E,) bool, resident experts
    recency: np.ndarray  # (E,) int64, clock of the last access (or prefetch load)
    freq: np.ndarray  # (E,) int64, accesses since the segment began (LFU)
    next_use: np.ndarray  # (E,) int64, Belady's `belady_key`: the access index of the next request, NEVER+ if none
    seen: np.ndarray  # (E,) bool, requested before in this segment (cold-miss accounting)
    prefetched: np.ndarray  # (E,) bool, loaded by prefetch and not requested since
    successor: np.ndarray  # (E, k) int64, experts of the token that followed the last token led by e; -1 none
    scalars: np.ndarray  # (3,) int64: clock, first choice of the previous token (-1 none), tokens replayed

    @classmethod
    def empty(cls, num_experts: int, top_k: int) -> CacheState:
        E = num_experts
        return cls(
            cached=np.zeros(E, np.bool_),
            recency=np.zeros(E, np.int64),
            freq=np.zeros(E, np.int64),
            next_use=np.full(E, NEVER, np.int64),
            seen=np.zeros(E, np.bool_),
            prefetched=np.zeros(E, np.bool_),
            successor=np.full((E, top_k), -1, np.int64),
            scalars=np.array([0, -1, 0], np.int64),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The state's arrays in field order, as the compiled kernels take them (not copies)."""
        return (
            self.cached,
            self.recency,
            self.freq,
            self.next_use,
            self.seen,
            self.prefetched,
            self.successor,
            self.scalars,
        )


def replay(
    experts: np.ndarray,
    segment_start: np.ndarray,
    policy: Policy,
    capacity: int,
    state: CacheState,
    next_use: np.ndarray | None = None,
    *,
    pinned: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
) -> np.ndarray:
    """Replay `experts` (tokens, k) through the cache in `state` (updated in place).

    `segment_start` (tokens,) bool marks tokens where the cache is emptied first (document
    starts under reset-per-document; otherwise only the first token of the stream, or none
    when continuing a stream). Belady needs `next_use` (tokens * k,) over the whole stream,
    sliced to this chunk: uint32 or uint64 distances from `next_use_distances` (0: never), read
    as they are, or int64 absolute indices from `next_use_indices` (converted here). Pin needs
    `pinned`, the ids of at most `capacity` experts that keep their slots; lookahead needs
    `predicted` (tokens, width) int, the experts to load before each token (ids outside 0..E-1,
    such as -1, mean none; the kernel sees them as ids >= E).
    Returns the counters (NUM_COUNTERS,) int64.
    """
    assert experts.ndim == 2 and len(segment_start) == len(experts), (experts.shape, segment_start.shape)
    assert capacity >= 1, capacity
    E = len(state.cached)
    assert experts.size == 0 or int(experts.max()) < E, "expert id beyond the state's E"
    code = POLICY_CODE[Policy(policy)]
    if code == BELADY:
        assert next_use is not None and len(next_use) == experts.size, "Belady needs next_use for every access"
        next_use = _as_distances(np.ascontiguousarray(next_use), int(state.scalars[2]) * experts.shape[1])
    else:
        next_use = np.empty(0, np.uint32)
    pin_mask = np.zeros(E, np.bool_)
    if code == PIN:
        assert pinned is not None and len(set(np.asarray(pinned).tolist())) == len(pinned), "pin needs distinct experts"
        assert len(pinned) <= max_pinned(capacity, experts.shape[1]), (len(pinned), capacity, "see max_pinned")
        pin_mask[np.asarray(pinned, np.int64)] = True
    ahead = np.empty((0, 1), experts.dtype)  # one compiled variant per id type, whatever the policy
    if code == LOOKAHEAD:
        assert predicted is not None and predicted.ndim == 2 and len(predicted) == len(experts), (
            "lookahead needs predicted (tokens, width)"
        )
        none = np.iinfo(experts.dtype).max  # "no prediction" in the stream's own id type, when it cannot be an id
        if predicted.dtype == experts.dtype and E <= none:
            ahead = np.ascontiguousarray(predicted)  # as spilled: no copy
        elif E <= none:
            ahead = np.where((predicted < 0) | (predicted >= E), none, predicted).astype(experts.dtype)
        else:
            ahead = np.where((predicted < 0) | (predicted >= E), E, predicted).astype(np.int64)  # none: E
    counters = np.zeros(NUM_COUNTERS, np.int64)
    _KERNELS[code](
        np.ascontiguousarray(experts),
        np.ascontiguousarray(segment_start, dtype=np.bool_),
        next_use,
        capacity,
        pin_mask,
        ahead,
        *state.arrays(),
        counters,
    )
    return counters


def _as_distances(next_use: np.ndarray, origin: int) -> np.ndarray:
    """Next uses as the kernel reads them: unsigned distances as given; int64 absolute indices
    (access `origin` first) turned into int64 distances, 0 for NEVER."""
    if next_use.dtype in (np.uint32, np.uint64):
        return next_use
    assert next_use.dtype == np.int64, next_use.dtype
    distance = next_use - (origin + np.arange(len(next_use), dtype=np.int64))
    distance[next_use == NEVER] = 0
    assert not np.any((distance <= 0) & (next_use != NEVER)), "a next use at or before its own access"
    return distance


def max_pinned(capacity: int, top_k: int) -> int:
    """The most experts pin may reserve at `capacity`: the rest must hold a token's k experts at
    once (capacity >= k), or one request at a time (below k)."""
    return capacity - (top_k if capacity >= top_k else 1)


@numba.njit(cache=True)
def _reset(flags, freq, successor):
    """Empty the cache and the policy memory at a segment start (a call: segment starts are rare,
    and the hot loop below is written out, since an inlined helper there costs ~40% of a replay)."""
    for e in range(flags.shape[0]):
        flags[e] &= _PINNED
        freq[e] = 0
        for j in range(successor.shape[1]):
            successor[e, j] = -1


@numba.njit(cache=True, inline="always")
def _run(
    policy,  # a constant in each kernel below: numba compiles one loop per policy
    experts,
    segment_start,
    next_use,
    capacity,
    pinned,
    ahead,
    cached,
    recency,
    freq,
    nxt,
    seen,
    prefetched,
    successor,
    scalars,
    counters,
):
    T, k = experts.shape
    E = cached.shape[0]
    clock, prev_first, token0 = scalars[0], scalars[1], scalars[2]
    protect = policy == LFU or policy == BELADY  # the LRU family's victim is never the token's own
    loads_ahead = policy == PREFETCH or policy == LOOKAHEAD
    grouped = capacity >= k  # a token's requests served together (else one by one)
    # The per-expert booleans as bits of one byte: one load and one store per request.
    flags = np.empty(E, np.uint8)
    res = np.empty(
        max(E, 1), experts.dtype
    )  # the region's resident experts (unpinned), in any order: unsigned, no wraparound
    region = capacity  # slots the replacement policy manages: the capacity less the pinned slots
    size = 0  # occupied slots of the region
    for e in range(E):
        flags[e] = cached[e] * _CACHED | seen[e] * _SEEN | prefetched[e] * _PREFETCHED | pinned[e] * _PINNED
        if pinned[e]:
            region -= 1
        elif cached[e]:
            res[size] = e
            size += 1
    held = np.empty(k, np.int64)  # LFU's and Belady's keys of a token's experts, kept aside while it loads
    want = np.empty(ahead.shape[1] if policy == LOOKAHEAD else k, np.int64)  # a prediction's experts
    hits, misses, cold, loads, useful = np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0)
    for t in range(T + 1):
        tg = token0 + t
        start = t < T and segment_start[t]
        if start and policy == LOOKAHEAD:  # a prediction is loaded into the segment it is for
            size, prev_first = 0, -1
            _reset(flags, freq, successor)
        # 0. Loads ahead of time, into a free slot or that of the least recently used expert outside
        # the prediction (stop when there is none), in order; ids outside 0..E-1 mean none.
        # Prefetch, after token t - 1: learn what followed the previous token, then load what
        # followed t - 1's first choice last time. Lookahead, before token t: its prediction.
        if loads_ahead:
            n_want = 0
            if policy == PREFETCH and t > 0:
                first = experts[t - 1, 0]
                if prev_first >= 0:
                    for j in range(k):
                        successor[prev_first, j] = experts[t - 1, j]
                prev_first = first
                for j in range(k):
                    want[j] = successor[first, j]
                n_want = k
            if policy == LOOKAHEAD and t < T:
                for j in range(want.shape[0]):
                    want[j] = ahead[t, j]
                n_want = want.shape[0]
            for j in range(n_want):
                p = want[j]
                if p < 0 or p >= E or flags[p] & _CACHED:
                    continue
                if size >= region:
                    best, oldest = -1, _FAR
                    for i in range(size):
                        v = res[i]
                        r = recency[v]
                        for jj in range(n_want):
                            r = _FAR if want[jj] == v else r
                        if r < oldest:
                            best, oldest = i, r
                    if best < 0:
                        break
                    flags[res[best]] &= ~(_CACHED | _PREFETCHED)
                    res[best] = p
                else:
                    res[size] = p
                    size += 1
                flags[p] |= _CACHED | _PREFETCHED
                clock += 1
                recency[p] = clock
                loads += 1
        if t == T:
            break
        if start and policy != LOOKAHEAD:
            size, prev_first = 0, -1
            _reset(flags, freq, successor)
        # 1. Every request is an access at its own clock tick. Grouped (capacity >= k), the token's
        # experts are all accessed on arrival, so that its loads evict none of them (for the LRU
        # family they are the most recent: the least recent resident is never one of them).
        if grouped:
            for j in range(k):
                e = experts[t, j]
                recency[e] = clock + 1 + j
                # LFU and Belady protect the token's experts by giving them, while the token loads, a
                # key that is never the victim's; their true keys are put back after step 2.
                if policy == LFU:
                    held[j] = freq[e] + 1
                    freq[e] = _FAR
                if policy == BELADY:
                    d = np.int64(next_use[t * k + j])
                    held[j] = tg * k + j + d if d != 0 else NEVER + (_LAST_CLOCK - (clock + 1 + j))
                    nxt[e] = -1
        # 2. Requests served in routing order: a hit if resident (grouped: on arrival, as a load
        # evicts only experts the token does not use), else loaded into a free slot of the region
        # or the victim's. Below k the expert's keys change as it is served (it is not resident on
        # a miss, so they do not take part in choosing its victim).
        for j in range(k):
            e = experts[t, j]
            clock += 1
            if not grouped:
                recency[e] = clock
                if policy == LFU:
                    freq[e] += 1
                if policy == BELADY:
                    d = np.int64(next_use[t * k + j])
                    nxt[e] = tg * k + j + d if d != 0 else NEVER + (_LAST_CLOCK - clock)
            f = flags[e]
            if loads_ahead:  # a prefetched expert not resident has lost its flag already
                useful += (f & _PREFETCHED) != 0
            if f & _CACHED:
                hits += 1
            else:
                misses += 1
                cold += (f & _SEEN) == 0
                if policy != PIN or not f & _PINNED:
                    if size < region:
                        res[size] = e
                        size += 1
                    else:
                        best = 0
                        if policy == LFU:  # fewest accesses, then least recent
                            fewest, oldest = _FAR, _FAR
                            for i in range(size):
                                v = res[i]
                                f, r = freq[v], recency[v]
                                if (f < fewest) | ((f == fewest) & (r < oldest)):
                                    best, fewest, oldest = i, f, r
                        elif policy == BELADY:  # the farthest next use, then least recent
                            farthest = nxt[res[0]]
                            for i in range(1, size):
                                b = nxt[res[i]]
                                if b > farthest:
                                    best, farthest = i, b
                        else:  # the least recent
                            oldest = recency[res[0]]
                            for i in range(1, size):
                                r = recency[res[i]]
                                if r < oldest:
                                    best, oldest = i, r
                        flags[res[best]] &= ~(_CACHED | _PREFETCHED)
                        res[best] = e
            flags[e] = (f | _CACHED | _SEEN) & ~_PREFETCHED  # the victim, if any, was another expert
        if grouped and protect:
            for j in range(k):
                if policy == LFU:
                    freq[experts[t, j]] = held[j]
                if policy == BELADY:
                    nxt[experts[t, j]] = held[j]
    for e in range(E):
        cached[e] = flags[e] & _CACHED
        seen[e] = flags[e] & _SEEN
        prefetched[e] = flags[e] & _PREFETCHED
    scalars[0], scalars[1], scalars[2] = clock, prev_first, token0 + T
    counters[HITS] += hits
    counters[MISSES] += misses
    counters[COLD_MISSES] += cold
    counters[PREFETCH_LOADS] += loads
    counters[PREFETCH_USEFUL] += useful


# One compiled kernel per policy (the arguments are those of `_run` after the policy).
@numba.njit(cache=True, nogil=True)
def _replay_lru(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(LRU, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


@numba.njit(cache=True, nogil=True)
def _replay_lfu(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(LFU, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


@numba.njit(cache=True, nogil=True)
def _replay_belady(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(BELADY, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


@numba.njit(cache=True, nogil=True)
def _replay_prefetch(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(PREFETCH, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


@numba.njit(cache=True, nogil=True)
def _replay_pin(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(PIN, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


@numba.njit(cache=True, nogil=True)
def _replay_lookahead(x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out):
    _run(LOOKAHEAD, x, starts, nu, capacity, pinned, ahead, cached, rec, freq, nxt, seen, pre, succ, scalars, out)


_KERNELS = {
    LRU: _replay_lru,
    LFU: _replay_lfu,
    BELADY: _replay_belady,
    PREFETCH: _replay_prefetch,
    PIN: _replay_pin,
    LOOKAHEAD: _replay_lookahead,
}
