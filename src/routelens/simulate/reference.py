"""Plain-Python expert-cache replay: the readable specification of every policy.

Deliberately naive — sets and dicts, and Belady scanning the future stream at every eviction
instead of using precomputed next-use indices — so that it shares no shortcut with the compiled
kernel in `cache_kernels.py`. Tests compare the two on random streams; the benchmark measures
this one's rate to show what compiling buys. Use it for streams of thousands of tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence

from routelens.simulate.policies import Policy


def replay_reference(
    stream: Sequence[Sequence[int]],
    policy: Policy,
    capacity: int,
    segment_start: Sequence[bool] | None = None,
    *,
    pinned: Sequence[int] = (),
    predicted: Sequence[Sequence[int]] | None = None,
) -> dict[str, int]:
    """Replay a list of tokens (each a list of k distinct experts, first choice first).

    Returns counts: hits, misses, cold_misses, prefetch_loads, prefetch_useful.
    `segment_start[t]` empties the cache (and all policy memory) before token t. Policy `pin`
    reserves a slot for each expert of `pinned` (at most `capacity`); `lookahead` loads
    `predicted[t]` (ids; negative ones mean none) before token t.
    """
    policy = Policy(policy)
    pins = set(pinned) if policy is Policy.PIN else set()
    k = len(stream[0]) if stream else 1
    assert len(pins) <= capacity - (k if capacity >= k else 1), "the other slots must hold a token's experts"
    region = capacity - len(pins)  # the slots the replacement rule manages
    T = len(stream)
    starts = list(segment_start) if segment_start is not None else [t == 0 for t in range(T)]
    counts = dict(hits=0, misses=0, cold_misses=0, prefetch_loads=0, prefetch_useful=0)
    cache: set[int] = set()
    last: dict[int, int] = {}  # clock of the last access or prefetch load
    freq: dict[int, int] = {}
    seen: set[int] = set()
    prefetched: set[int] = set()
    successor: dict[int, list[int]] = {}
    prev_first = None
    clock = 0

    def next_access(expert: int, t: int, j: int) -> float:
        """Access index of the next request of `expert` after request j of token t, within the segment."""
        k = len(stream[t])
        for a in range(t * k + j + 1, T * k):
            t2, j2 = divmod(a, k)
            if t2 > t and starts[t2]:
                break
            if stream[t2][j2] == expert:
                return a
        return float("inf")

    def rank(v: int, t: int, j: int):  # the smallest rank is evicted; j: the request being served
        if policy is Policy.LFU:
            return (freq[v], last[v])
        if policy is Policy.BELADY:
            return (-next_access(v, t, j - 1), last[v])
        return (last[v],)

    def admit(e: int, candidates: list[int], key) -> None:
        """Make e resident after a miss: a pinned expert has its own slot; any other takes a free
        slot of the region or evicts the unpinned candidate of smallest `key`."""
        if e not in pins and len(cache - pins) >= region:
            victim = min((v for v in candidates if v not in pins), key=key)
            cache.discard(victim), prefetched.discard(victim)
        cache.add(e)

    def load_ahead(wanted: list[int]) -> None:
        """Prefetch `wanted` in order, each evicting the least recent unpinned expert outside it."""
        nonlocal clock
        for p in wanted:
            if p in cache:
                continue
            if p not in pins and len(cache - pins) >= region:
                candidates = [v for v in cache if v not in wanted and v not in pins]
                if not candidates:
                    break
                victim = min(candidates, key=lambda v: last[v])
                cache.discard(victim), prefetched.discard(victim)
            cache.add(p)
            clock += 1
            last[p] = clock
            prefetched.add(p)
            counts["prefetch_loads"] += 1

    for t, token in enumerate(stream):
        token = list(token)
        if starts[t]:
            cache.clear(), freq.clear(), seen.clear(), prefetched.clear(), successor.clear()
            prev_first = None
        if policy is Policy.LOOKAHEAD:
            load_ahead([p for p in predicted[t] if p >= 0])
        if capacity < len(token):  # requests served one by one (demand paging)
            for j, e in enumerate(token):
                clock += 1
                if e in cache:
                    counts["hits"] += 1
                    if e in prefetched:
                        counts["prefetch_useful"] += 1
                        prefetched.discard(e)
                else:
                    counts["misses"] += 1
                    counts["cold_misses"] += e not in seen
                    admit(e, list(cache), key=lambda v, t=t, j=j: rank(v, t, j))
                last[e] = clock
                freq[e] = freq.get(e, 0) + 1
                seen.add(e)
        else:
            on_arrival = [e in cache for e in token]
            for e, hit in zip(token, on_arrival):
                clock += 1
                last[e] = clock
                freq[e] = freq.get(e, 0) + 1
                if hit:
                    counts["hits"] += 1
                    if e in prefetched:
                        counts["prefetch_useful"] += 1
                        prefetched.discard(e)
            for e, hit in zip(token, on_arrival):
                if hit:
                    continue
                counts["misses"] += 1
                counts["cold_misses"] += e not in seen
                admit(e, [v for v in cache if v not in token], key=lambda v, t=t: rank(v, t, len(token)))
        seen.update(token)
        if policy is Policy.PREFETCH:
            if prev_first is not None:
                successor[prev_first] = token
            prev_first = token[0]
            load_ahead(successor.get(token[0], []))
    return counts
