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
) -> dict[str, int]:
    """Replay a list of tokens (each a list of k distinct experts, first choice first).

    Returns counts: hits, misses, cold_misses, prefetch_loads, prefetch_useful.
    `segment_start[t]` empties the cache (and all policy memory) before token t.
    """
    policy = Policy(policy)
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

    for t, token in enumerate(stream):
        token = list(token)
        if starts[t]:
            cache.clear(), freq.clear(), seen.clear(), prefetched.clear(), successor.clear()
            prev_first = None
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
                    if len(cache) >= capacity:
                        victim = min(cache, key=lambda v: rank(v, t, j))
                        cache.discard(victim), prefetched.discard(victim)
                    cache.add(e)
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
                if len(cache) >= capacity:
                    victim = min((v for v in cache if v not in token), key=lambda v: rank(v, t, len(token)))
                    cache.discard(victim), prefetched.discard(victim)
                cache.add(e)
        seen.update(token)
        if policy is Policy.PREFETCH:
            if prev_first is not None:
                successor[prev_first] = token
            prev_first = token[0]
            predicted = successor.get(token[0], [])
            for p in predicted:
                if p in cache:
                    continue
                if len(cache) >= capacity:
                    candidates = [v for v in cache if v not in predicted]
                    if not candidates:
                        break
                    victim = min(candidates, key=lambda v: last[v])
                    cache.discard(victim), prefetched.discard(victim)
                cache.add(p)
                clock += 1
                last[p] = clock
                prefetched.add(p)
                counts["prefetch_loads"] += 1
    return counts
