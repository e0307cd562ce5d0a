"""Compiled replay of one layer's expert stream through a fixed-size expert cache.

This is the fast path of the cache simulator: arrays in, counters out, no trace and no I/O.
`replay` runs one policy (LRU, LFU, Belady, prefetch) at one capacity over a stream of
tokens `(tokens, k)`, carrying the cache state in a `CacheState` so that a stream can be fed
chunk by chunk. The rules (docs/simulate.md gives them in full):

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

Per-event Python replays about 250k token-layer events per second; numba compiles this loop to
run ~80x faster (20M events/s, benchmarks/bench_simulate.py), which makes 100M-event traces a
matter of seconds. The plain-Python `reference.py` is the specification it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from routelens.simulate.policies import POLICY_CODE, Policy

LRU, LFU, BELADY, PREFETCH, PIN, LOOKAHEAD = (POLICY_CODE[p] for p in Policy)
NEVER = np.int64(1) << 62  # next use of an expert that is never requested again (in its segment)

# Counter slots returned by `replay` (and accumulated across chunks).
HITS, MISSES, COLD_MISSES, PREFETCH_LOADS, PREFETCH_USEFUL = range(5)
NUM_COUNTERS = 5


@dataclass
class CacheState:
    """Everything a replay carries from one chunk of a layer's stream to the next."""

    cached: np.ndarray  # (E,) bool, resident experts
    recency: np.ndarray  # (E,) int64, clock of the last access (or prefetch load)
    freq: np.ndarray  # (E,) int64, accesses since the segment began (LFU)
    next_use: np.ndarray  # (E,) int64, access index of the next request (Belady)
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
    when continuing a stream). Belady needs `next_use` (tokens * k,) int64 from `next_use_indices`
    over the whole stream, sliced to this chunk; pin needs `pinned`, the ids of at most
    `capacity` experts that keep their slots; lookahead needs `predicted` (tokens, width) int,
    the experts to load before each token (ids outside 0..E-1, such as -1, mean none; the kernel
    sees them as ids >= E).
    Returns the counters (NUM_COUNTERS,) int64.
    """
    assert experts.ndim == 2 and len(segment_start) == len(experts), (experts.shape, segment_start.shape)
    assert capacity >= 1, capacity
    E = len(state.cached)
    assert experts.size == 0 or int(experts.max()) < E, "expert id beyond the state's E"
    code = POLICY_CODE[Policy(policy)]
    if code == BELADY:
        assert next_use is not None and len(next_use) == experts.size, "Belady needs next_use for every access"
    else:
        next_use = np.empty(0, np.int64)
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
    _replay(
        np.ascontiguousarray(experts),
        np.ascontiguousarray(segment_start, dtype=np.bool_),
        np.ascontiguousarray(next_use, dtype=np.int64),
        code,
        capacity,
        pin_mask,
        ahead,
        state.cached,
        state.recency,
        state.freq,
        state.next_use,
        state.seen,
        state.prefetched,
        state.successor,
        state.scalars,
        counters,
    )
    return counters


def max_pinned(capacity: int, top_k: int) -> int:
    """The most experts pin may reserve at `capacity`: the rest must hold a token's k experts at
    once (capacity >= k), or one request at a time (below k)."""
    return capacity - (top_k if capacity >= top_k else 1)


@numba.njit(cache=True, inline="always")
def _worse(policy, v, best, recency, freq, nxt):
    """True when expert v is a better eviction victim than expert `best` under `policy`."""
    if policy == LFU:
        if freq[v] != freq[best]:
            return freq[v] < freq[best]
    elif policy == BELADY:
        if nxt[v] != nxt[best]:
            return nxt[v] > nxt[best]
    return recency[v] < recency[best]  # LRU, PREFETCH, and every tie-break


@numba.njit(cache=True, inline="always")
def _evict(policy, protect, tg, cached, pinned, prefetched, recency, freq, nxt):
    """Evict the worst cached expert under `policy` among the unpinned ones with protect[v] != tg;
    returns it, or -1 when there is none (nothing evicted)."""
    victim = -1
    for v in range(cached.shape[0]):
        if cached[v] and not pinned[v] and protect[v] != tg:
            if victim < 0 or _worse(policy, v, victim, recency, freq, nxt):
                victim = v
    if victim >= 0:
        cached[victim] = False
        prefetched[victim] = False
    return victim


@numba.njit(cache=True, inline="always")
def _take_slot(e, policy, protect, tg, region, size, cached, pinned, prefetched, recency, freq, nxt):
    """Make expert e resident after a miss: its reserved slot if pinned, else a free slot of the
    policy's region or the slot of the policy's victim (unprotected, unpinned: `max_pinned`
    leaves the region room for one). Returns the region's new occupancy."""
    if not pinned[e]:
        if size >= region:
            _evict(policy, protect, tg, cached, pinned, prefetched, recency, freq, nxt)
            size -= 1
        size += 1
    cached[e] = True
    return size


@numba.njit(cache=True, inline="always")
def _load_predicted(
    pred, row, tg, region, size, clock, pstamp, cached, pinned, prefetched, recency, freq, nxt, counters
):
    """Load the predicted experts `pred[row]` (ids outside 0..E-1 mean none) that are not resident, in
    order, each into a free slot or that of the least recently used expert outside the prediction
    (stop when there is none): the loads of prefetch and of lookahead. Inlined by numba, so both
    replay loops run it at the speed of the code written out (the table and its row are passed,
    not a row view: a view per token costs the lookahead replay ~30%). Returns (size, clock)."""
    E = cached.shape[0]
    for j in range(pred.shape[1]):
        if 0 <= pred[row, j] < E:
            pstamp[pred[row, j]] = tg
    for j in range(pred.shape[1]):
        p = pred[row, j]
        if p < 0 or p >= E or cached[p]:
            continue
        if size >= region:
            if _evict(LRU, pstamp, tg, cached, pinned, prefetched, recency, freq, nxt) < 0:
                break
            size -= 1
        cached[p] = True
        size += 1
        clock += 1
        recency[p] = clock
        prefetched[p] = True
        counters[PREFETCH_LOADS] += 1
    return size, clock


@numba.njit(cache=True, nogil=True)
def _replay(
    experts,
    segment_start,
    next_use,
    policy,
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
    region = capacity  # slots the replacement policy manages: the capacity less the pinned slots
    size = 0  # occupied slots of the region
    for e in range(E):
        region -= pinned[e]
        size += cached[e] and not pinned[e]
    stamp = np.full(E, -1, np.int64)  # token (global index) that last requested e: its protected set
    pstamp = np.full(E, -1, np.int64)  # token after which e was last predicted (prefetch protection)
    hit = np.zeros(k, np.bool_)
    for t in range(T):
        tg = token0 + t
        if segment_start[t]:
            size = 0
            prev_first = -1
            for e in range(E):
                cached[e] = False
                freq[e] = 0
                seen[e] = False
                prefetched[e] = False
                for j in range(k):
                    successor[e, j] = -1
        if policy == LOOKAHEAD:
            # Load the prediction while an earlier layer computes this token: the experts of ahead[t]
            # not resident, in order, each evicting the least recently used expert outside the
            # prediction (stop when there is none); ids >= E mean none. The same loads as prefetch's.
            size, clock = _load_predicted(
                ahead, t, tg, region, size, clock, pstamp, cached, pinned, prefetched, recency, freq, nxt, counters
            )
        if capacity < k:
            # The token's experts cannot all be resident: its requests are served one by one in
            # routing order (demand paging), each a hit only if resident when served.
            for j in range(k):
                e = experts[t, j]
                clock += 1
                if cached[e]:
                    counters[HITS] += 1
                    if prefetched[e]:
                        counters[PREFETCH_USEFUL] += 1
                        prefetched[e] = False
                else:
                    counters[MISSES] += 1
                    if not seen[e]:
                        counters[COLD_MISSES] += 1
                    # nothing protected: stamps are >= -1, never -2
                    size = _take_slot(
                        e, policy, stamp, -2, region, size, cached, pinned, prefetched, recency, freq, nxt
                    )
                recency[e] = clock
                freq[e] += 1
                if policy == BELADY:
                    nxt[e] = next_use[t * k + j]
                seen[e] = True
        else:
            # 1. every request is an access at its own clock tick; hits are decided on arrival
            for j in range(k):
                e = experts[t, j]
                stamp[e] = tg
                clock += 1
                recency[e] = clock
                freq[e] += 1
                if policy == BELADY:
                    nxt[e] = next_use[t * k + j]
                hit[j] = cached[e]
                if cached[e]:
                    counters[HITS] += 1
                    if prefetched[e]:
                        counters[PREFETCH_USEFUL] += 1
                        prefetched[e] = False
            # 2. misses loaded in routing order, evicting only experts this token does not use
            for j in range(k):
                if hit[j]:
                    continue
                e = experts[t, j]
                counters[MISSES] += 1
                if not seen[e]:
                    counters[COLD_MISSES] += 1
                # Into a free slot of the region or the victim's, this token's own experts protected
                # (written out, not a call to _take_slot: the hot path ran ~30% slower through it).
                if not pinned[e]:
                    if size >= region:
                        _evict(policy, stamp, tg, cached, pinned, prefetched, recency, freq, nxt)
                        size -= 1
                    size += 1
                cached[e] = True
            for j in range(k):
                seen[experts[t, j]] = True
        # 3. prefetch: learn "what followed the previous token", then load the prediction for the next
        if policy == PREFETCH:
            first = experts[t, 0]
            if prev_first >= 0:
                for j in range(k):
                    successor[prev_first, j] = experts[t, j]
            prev_first = first
            # the same loads as lookahead's, predicted from the successor table
            size, clock = _load_predicted(
                successor,
                first,
                tg,
                region,
                size,
                clock,
                pstamp,
                cached,
                pinned,
                prefetched,
                recency,
                freq,
                nxt,
                counters,
            )
    scalars[0], scalars[1], scalars[2] = clock, prev_first, token0 + T


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
    _next_use(experts.reshape(-1), np.ascontiguousarray(segment_start, dtype=np.bool_), k, last, base, out)
    return out


@numba.njit(cache=True, nogil=True)
def _next_use(flat, segment_start, k, last, base, out):
    for a in range(flat.shape[0] - 1, -1, -1):
        e = flat[a]
        out[a] = last[e]
        last[e] = base + a
        if a % k == 0 and segment_start[a // k]:
            last[:] = NEVER  # nothing before a segment start may see a use inside it


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
