"""Speed of the expert-cache simulator: every policy compiled, against a numba loop that only
reads the events and against the 20M events/s target, in the same run; naive Python on a slice
checks every policy's hits.

Events are token-layer pairs (one token's k requests at one layer) from a synthetic Markov
stream with locality: E=8 experts, top-2, the first choice repeating the previous token's with
probability --repeat, the second a distinct uniform draw. Every policy replays all --events at
--capacity: LRU, LFU, Belady (its next uses included: `belady.replay_belady` computes them block
by block just before replaying each block; the whole stream's next-use pass and then one
replay is timed once beside it, split), pin (the 2 most
used experts keep their slots: capacity 4 = 2 pinned + room for a token's k = 2), prefetch,
lookahead (a prediction of each token's experts right 90% of the time: each id replaced by a
uniform one with probability 0.1, as a trace's `lookahead` column gives) and per-layer budgets
(the layer's LRU hit curve at every capacity 1..E, one pass, then the best split of the slots).

Each policy's rate, the best of --trials replays (the policies take turns, so that a busy spell
of a shared machine does not fall on one policy alone; the slowest trial is shown too), is printed
beside the limit, a numba loop that only sums the ids (what any replay must at least do), and the
target. Then seconds per million events at 1M and 10M
events (best of 5), with the peak of the arrays traced while each ran, so that a cost growing
faster than the events shows; then the naive-Python reference (`routelens.simulate.reference`)
on the first --naive-events events, whose hits must equal the compiled replay's on that slice.

Memory: 2 bytes per event for the stream (uint8 ids, k = 2), 2 for the predictions and 8 for
Belady's next uses (uint32 per request) in the one whole-stream comparison run: about 1.2 GB at
100M events; the policies themselves need the stream and the predictions only (400 MB).

    python benchmarks/bench_simulate.py                   # 100M events, the acceptance setting
    python benchmarks/bench_simulate.py --events 10000000 # quicker
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numba
import numpy as np

from routelens.simulate.belady import replay_belady
from routelens.simulate.budget import best_split
from routelens.simulate.cache_kernels import HITS, MISSES, PREFETCH_LOADS, CacheState, next_use_distances, replay
from routelens.simulate.curve import CurveState, lru_curve
from routelens.simulate.reference import replay_reference

E, K = 8, 2
TARGET = 20e6  # events/s every policy must reach
POLICIES = ("LRU", "LFU", "Belady", "pin", "prefetch", "lookahead", "budgets")


def markov_stream(events: int, num_experts: int, repeat: float, seed: int, block: int = 1 << 23) -> np.ndarray:
    """(events, 2) uint8: first choice repeats the previous one with probability `repeat`."""
    rng = np.random.default_rng(seed)
    out = np.empty((events, 2), np.uint8)
    prev = int(rng.integers(num_experts))
    for lo in range(0, events, block):  # blocks bound the temporaries
        n = min(block, events - lo)
        fresh = rng.integers(0, num_experts, n, dtype=np.uint8)
        keep = rng.random(n, dtype=np.float32) < repeat
        keep[0] = False
        fresh[0] = prev if rng.random() < repeat else fresh[0]
        last_fresh = np.maximum.accumulate(np.where(keep, 0, np.arange(n, dtype=np.int32)))
        first = fresh[last_fresh]
        out[lo : lo + n, 0] = first
        out[lo : lo + n, 1] = (first + rng.integers(1, num_experts, n, dtype=np.uint8)) % num_experts
        prev = int(first[-1])
    return out


def noisy_copy(stream: np.ndarray, num_experts: int, noise: float, seed: int, block: int = 1 << 23) -> np.ndarray:
    """A prediction of `stream`: each id replaced by a uniform one with probability `noise`."""
    rng = np.random.default_rng(seed)
    out = stream.copy()
    for lo in range(0, len(out), block):
        part = out[lo : lo + block]
        flip = rng.random(part.shape, dtype=np.float32) < noise
        part[flip] = rng.integers(0, num_experts, int(flip.sum()), dtype=np.uint8)
    return out


@numba.njit(cache=True, nogil=True)
def read_all(experts):
    """The limit: a loop that reads every event and does nothing else (sums the ids)."""
    total = 0
    for t in range(experts.shape[0]):
        for j in range(experts.shape[1]):
            total += experts[t, j]
    return total


class Workload:
    """One stream and what the policies need beside it (pins, predictions), at one size."""

    def __init__(self, events: int, repeat: float, seed: int):
        self.stream = markov_stream(events, E, repeat, seed)
        self.start = np.zeros(events, np.bool_)
        self.start[0] = True
        self.predicted = noisy_copy(self.stream, E, 0.1, seed + 1)
        head = self.stream[: 1 << 20].reshape(-1)
        self.by_use = np.argsort(-np.bincount(head, minlength=E), kind="stable")

    def run(self, policy: str, capacity: int, n: int | None = None) -> tuple[np.ndarray, dict]:
        """Counters of `policy` on the first n events (all by default) and {"seconds": it took,
        "curve": budgets' LRU counters at capacities 1..E}."""
        x, start = self.stream[:n], self.start[:n]
        t0 = time.perf_counter()
        info = {}
        if policy == "Belady":
            counters = replay_belady(x, start, capacity, CacheState.empty(E, K))
        elif policy == "budgets":
            curve = lru_curve(x, start, CurveState.empty(E))
            hits = np.concatenate([[0], curve[:, HITS]])[None, :]  # (layers = 1, capacity 0..E)
            best_split(hits, capacity)
            counters = curve[capacity - 1]
            info["curve"] = curve
        else:
            side = {
                "pin": {"pinned": self.by_use[: max(0, capacity - K)]},
                "lookahead": {"predicted": self.predicted[:n]},
            }.get(policy, {})
            counters = replay(x, start, policy.lower(), capacity, CacheState.empty(E, K), **side)
        info["seconds"] = time.perf_counter() - t0
        return counters, info


def naive(work: Workload, policy: str, capacity: int, n: int) -> list[dict]:
    """The reference's counts on the first n events: one dict, or for budgets one per capacity 1..E."""
    sl = work.stream[:n].tolist()
    if policy == "budgets":
        return [replay_reference(sl, "lru", c) for c in range(1, E + 1)]
    side = {
        "pin": {"pinned": work.by_use[: max(0, capacity - K)].tolist()},
        "lookahead": {"predicted": work.predicted[:n].tolist()},
    }.get(policy, {})
    return [replay_reference(sl, policy.lower(), capacity, **side)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000, help="token-layer events replayed by every policy")
    ap.add_argument("--naive-events", type=int, default=20_000, help="events replayed by the naive Python reference")
    ap.add_argument("--capacity", type=int, default=4, help="experts cached (of 8)")
    ap.add_argument("--repeat", type=float, default=0.5, help="probability that the first choice repeats")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=3, help="replays of every policy at --events, the best one reported")
    args = ap.parse_args()
    C, N = args.capacity, args.events

    tracemalloc.start()
    work, gen_s = timed(lambda: Workload(N, args.repeat, args.seed))
    print(f"{N:,} token-layer events (E={E}, k={K}, repeat={args.repeat}), capacity {C}; generated in {gen_s:.1f} s")
    (_, compile_s) = timed(lambda: [read_all(work.stream[:8])] + [work.run(p, C, 64) for p in POLICIES])
    print(f"numba compile / cache load: {compile_s:.1f} s (not counted)")

    limit_s = min(timed(lambda: read_all(work.stream))[1] for _ in range(args.trials))
    limit = N / limit_s
    print(f"limit: a numba loop that only reads the events (sums the ids): {limit_s:.3f} s, {limit:,.0f} events/s")
    print(f"target: {TARGET:,.0f} events/s")
    print(f"best of {args.trials} trials, the policies taking turns (the slowest trial's seconds in brackets)\n")
    results, slowest_trial, memory = {}, {}, {}
    for _ in range(args.trials):
        for policy in POLICIES:
            tracemalloc.reset_peak()
            counters, info = work.run(policy, C)
            memory[policy] = max(memory.get(policy, 0), tracemalloc.get_traced_memory()[1])
            if policy not in results or info["seconds"] < results[policy][1]["seconds"]:
                results[policy] = counters, info
            slowest_trial[policy] = max(slowest_trial.get(policy, 0.0), info["seconds"])
    print(
        f"{'policy':10} {'seconds':>8} {'(slowest)':>9} {'events/s':>13} {'/ limit':>8} {'/ target':>9} "
        f"{'hit rate':>9} {'loads/token':>12}"
    )
    for policy in POLICIES:
        counters, info = results[policy]
        s = info["seconds"]
        loads = (counters[MISSES] + counters[PREFETCH_LOADS]) / N
        print(
            f"{policy:10} {s:>8.2f} {f'({slowest_trial[policy]:.2f})':>9} {N / s:>13,.0f} {N / s / limit:>8.3f} "
            f"{N / s / TARGET:>9.2f} {counters[HITS] / (K * N):>9.3f} {loads:>12.3f}"
        )
    t0 = time.perf_counter()
    upcoming = next_use_distances(work.stream, work.start)  # the whole stream's, 4 bytes per request
    next_use_s = time.perf_counter() - t0
    whole = replay(work.stream, work.start, "belady", C, CacheState.empty(E, K), upcoming)
    whole_s = time.perf_counter() - t0
    del upcoming
    assert whole.tolist() == results["Belady"][0].tolist(), "Belady in blocks differs from the whole-stream replay"
    print(
        f"Belady with the whole stream's next uses first (same counters): {whole_s:.2f} s, {N / whole_s:,.0f} events/s "
        f"(next-use {next_use_s:.2f} s + replay {whole_s - next_use_s:.2f} s)"
    )
    print(
        f"budgets: LRU hit curve at capacities 1..{E} in one pass, hits at capacity {C} "
        f"{'equal' if results['budgets'][0][HITS] == results['LRU'][0][HITS] else 'DIFFER from'} LRU's replay"
    )
    slowest = min(POLICIES, key=lambda p: N / results[p][1]["seconds"])
    slowest_rate = N / results[slowest][1]["seconds"]
    print(
        f"slowest: {slowest} at {slowest_rate:,.0f} events/s ({slowest_rate / TARGET:.2f}x the target); "
        f"peak traced arrays {max(memory.values()) / 2**20:,.0f} MiB (stream and predictions included; during "
        f"{max(memory, key=memory.get)}), "
        f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB"
    )
    tracemalloc.stop()
    work = None  # free the stream before the smaller runs

    print("\nseconds per million events, best of 5 taking turns (peak traced arrays while it ran, stream included)")
    sizes = [n for n in (1_000_000, 10_000_000) if n <= N]
    per_million: dict = {p: {} for p in POLICIES}
    peaks: dict = {p: {} for p in POLICIES}
    for n in sizes:
        tracemalloc.start()
        small = Workload(n, args.repeat, args.seed)
        for _ in range(5):  # the policies taking turns, as above
            for policy in POLICIES:
                tracemalloc.reset_peak()
                seconds = small.run(policy, C)[1]["seconds"]
                peaks[policy][n] = max(peaks[policy].get(n, 0), tracemalloc.get_traced_memory()[1])
                per_million[policy][n] = min(per_million[policy].get(n, np.inf), seconds / (n / 1e6))
        tracemalloc.stop()
        small = None
    head = "".join(f"{f'{n // 10**6}M events':>22}" for n in sizes)
    print(f"{'policy':10}{head}{'  10M / 1M' if len(sizes) == 2 else ''}")
    for policy in POLICIES:
        cells = "".join(f"{per_million[policy][n]:>10.4f} s ({peaks[policy][n] / 2**20:>5.0f} MiB)" for n in sizes)
        ratio = f"{per_million[policy][sizes[1]] / per_million[policy][sizes[0]]:>10.2f}" if len(sizes) == 2 else ""
        print(f"{policy:10}{cells}{ratio}")

    n = min(args.naive_events, N)
    print(f"\nnaive Python reference on the first {n:,} events (hits must equal the compiled replay's)")
    print(f"{'policy':10} {'seconds':>8} {'events/s':>10} {'compiled x':>11} {'hit rate':>9}")
    check = Workload(n, args.repeat, args.seed)
    for policy in POLICIES:
        counts, naive_s = timed(lambda p=policy: naive(check, p, C, n))
        compiled, info = check.run(policy, C)
        if policy == "budgets":
            curve = info["curve"]
            assert [c["hits"] for c in counts] == curve[:, HITS].tolist(), policy
            hits = counts[C - 1]["hits"]
        else:
            assert counts[0]["hits"] == compiled[HITS], (policy, counts[0], compiled)
            hits = counts[0]["hits"]
        events = n * len(counts)  # budgets: one replay per capacity
        speedup = (N / results[policy][1]["seconds"]) / (events / naive_s)
        print(f"{policy:10} {naive_s:>8.2f} {events / naive_s:>10,.0f} {speedup:>11,.0f} {hits / (K * n):>9.3f}")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


if __name__ == "__main__":
    main()
