"""Speed of the expert-cache simulator: compiled LRU, Belady, pin and lookahead against naive
Python, same run.

Events are token-layer pairs (one token's k requests at one layer) from a synthetic Markov
stream with locality: E=8 experts, top-2, the first choice repeating the previous token's with
probability --repeat, the second a distinct uniform draw. The compiled kernels replay all
--events; the plain-Python reference (`routelens.simulate.reference`) replays a slice of
--naive-events of the same stream, and the ratio of rates is printed. Belady's time includes
its next-use pass, also shown apart.

Pin keeps the 2 most used experts in their slots (capacity 4 = 2 pinned + room for a token's
k = 2); lookahead loads a prediction of each token's experts that is right 90% of the time
(each id replaced by a uniform one with probability 0.1), as a trace's `lookahead` column gives.

Memory: 2 bytes per event for the stream (uint8 ids, k=2), 2 more for the predictions, + 16
bytes per event for Belady's next-use indices (int64 per request): about 2 GB at 100M events.

    python benchmarks/bench_simulate.py                   # 100M events, the acceptance setting
    python benchmarks/bench_simulate.py --events 5000000  # quicker
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from routelens.simulate.cache_kernels import PREFETCH_LOADS, CacheState, next_use_indices, replay
from routelens.simulate.reference import replay_reference


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


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--events", type=int, default=100_000_000, help="token-layer events replayed by the compiled kernels"
    )
    ap.add_argument("--naive-events", type=int, default=20_000, help="events replayed by the naive Python reference")
    ap.add_argument("--capacity", type=int, default=4, help="experts cached (of 8)")
    ap.add_argument("--repeat", type=float, default=0.5, help="probability that the first choice repeats")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    E, k, C = 8, 2, args.capacity

    stream, gen_s = timed(lambda: markov_stream(args.events, E, args.repeat, args.seed))
    start = np.zeros(len(stream), bool)
    start[0] = True
    print(
        f"{args.events:,} token-layer events (E={E}, k={k}, repeat={args.repeat}), capacity {C}; "
        f"generated in {gen_s:.1f} s"
    )

    # Compile once on a tiny input so that the timings below are of the loop alone.
    (_, compile_s) = timed(
        lambda: [
            replay(stream[:8], start[:8], p, C, CacheState.empty(E, k), next_use_indices(stream[:8], start[:8]))
            for p in ("lru", "belady")
        ]
    )
    print(f"numba compile / cache load: {compile_s:.1f} s (not counted)")

    lru, lru_s = timed(lambda: replay(stream, start, "lru", C, CacheState.empty(E, k)))
    upcoming, nu_s = timed(lambda: next_use_indices(stream, start))
    opt, opt_loop_s = timed(lambda u=upcoming: replay(stream, start, "belady", C, CacheState.empty(E, k), u))
    del upcoming
    opt_s = nu_s + opt_loop_s
    pinned = np.argsort(-np.bincount(stream[: 1 << 20].reshape(-1), minlength=E), kind="stable")[: max(0, C - k)]
    pin, pin_s = timed(lambda: replay(stream, start, "pin", C, CacheState.empty(E, k), pinned=pinned))
    predicted = noisy_copy(stream, E, 0.1, args.seed + 1)
    ahead, ahead_s = timed(lambda: replay(stream, start, "lookahead", C, CacheState.empty(E, k), predicted=predicted))

    n = min(args.naive_events, args.events)
    sl = stream[:n].tolist()
    naive_lru, naive_lru_s = timed(lambda: replay_reference(sl, "lru", C))
    naive_opt, naive_opt_s = timed(lambda: replay_reference(sl, "belady", C))
    naive_pin, naive_pin_s = timed(lambda: replay_reference(sl, "pin", C, pinned=pinned.tolist()))
    naive_ahead, naive_ahead_s = timed(lambda: replay_reference(sl, "lookahead", C, predicted=predicted[:n].tolist()))
    # The slice's hits must agree with the compiled replay of the same slice.
    assert naive_lru["hits"] == int(replay(stream[:n], start[:n], "lru", C, CacheState.empty(E, k))[0])
    assert naive_ahead["hits"] == int(
        replay(stream[:n], start[:n], "lookahead", C, CacheState.empty(E, k), predicted=predicted[:n])[0]
    )

    rate = lambda events, s: events / s  # noqa: E731
    rows = [
        ("LRU compiled", args.events, lru_s, lru[0] / (k * args.events)),
        ("Belady compiled (next-use + loop)", args.events, opt_s, opt[0] / (k * args.events)),
        (f"pin {len(pinned)} compiled", args.events, pin_s, pin[0] / (k * args.events)),
        ("lookahead compiled", args.events, ahead_s, ahead[0] / (k * args.events)),
        ("LRU naive Python (slice)", n, naive_lru_s, naive_lru["hits"] / (k * n)),
        ("Belady naive Python (slice)", n, naive_opt_s, naive_opt["hits"] / (k * n)),
        ("pin naive Python (slice)", n, naive_pin_s, naive_pin["hits"] / (k * n)),
        ("lookahead naive Python (slice)", n, naive_ahead_s, naive_ahead["hits"] / (k * n)),
    ]
    print(f"{'':36} {'events':>13} {'seconds':>9} {'events/s':>13} {'hit rate':>9}")
    for name, events, seconds, hit in rows:
        print(f"{name:36} {events:>13,} {seconds:>9.2f} {rate(events, seconds):>13,.0f} {hit:>9.3f}")
    print(f"Belady split: next-use {nu_s:.2f} s + replay {opt_loop_s:.2f} s")
    print(
        f"speed-up over naive Python: LRU x{rate(args.events, lru_s) / rate(n, naive_lru_s):,.0f}, "
        f"Belady x{rate(args.events, opt_s) / rate(n, naive_opt_s):,.0f}"
    )
    print(
        f"lookahead loads per token {(ahead[1] + ahead[PREFETCH_LOADS]) / args.events:.3f} "
        f"(LRU {lru[1] / args.events:.3f}): it trades wasted loads for hits"
    )
    scale = 100_000_000 / args.events
    print(
        f"at 100M events: LRU {lru_s * scale:.1f} s, Belady {opt_s * scale:.1f} s, pin {pin_s * scale:.1f} s, "
        f"lookahead {ahead_s * scale:.1f} s (target <= 30 s each)"
    )


def noisy_copy(stream: np.ndarray, num_experts: int, noise: float, seed: int, block: int = 1 << 23) -> np.ndarray:
    """A prediction of `stream`: each id replaced by a uniform one with probability `noise`."""
    rng = np.random.default_rng(seed)
    out = stream.copy()
    for lo in range(0, len(out), block):
        part = out[lo : lo + block]
        flip = rng.random(part.shape, dtype=np.float32) < noise
        part[flip] = rng.integers(0, num_experts, int(flip.sum()), dtype=np.uint8)
    return out


if __name__ == "__main__":
    main()
