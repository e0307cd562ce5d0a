"""Out-of-core analysis: `routelens analyze` over a trace of N token-layer assignments and over
one of 2N, peak memory measured on the CLI process, which must stay under a limit and flat.

Two synthetic traces (the planted Markov routing of `bench_analyze.write_trace`: 4 domains,
documents of 128..896 tokens, top-k ids and float16 weights) are written to disk by a child
process, N and 2N assignments (token x layer pairs; 500M by default = 15.625M tokens x 32
layers, top-2 of 8). Then `routelens analyze TRACE --json FILE --quiet` runs on each as a
subprocess; its wall time and peak resident set size (ru_maxrss from wait4, the child alone)
are printed with the ratio peak(2N) / peak(N). The run fails if a peak exceeds --limit-gb or
the ratio exceeds --max-ratio: memory must not grow with the number of tokens.

    python benchmarks/bench_scale.py                            # 500M and 1G assignments
    python benchmarks/bench_scale.py --assignments 100000000    # quicker check
    python benchmarks/bench_scale.py --tmp /scratch --keep      # traces kept under /scratch

Disk: about 4.8 bytes per assignment at top-2 (ids and float16 weights, zstd) for N + 2N, checked
before writing: 7.2 GB at the default. Traces are reused from --tmp when --keep left them there.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import write_trace  # the same synthetic trace, written in pieces

BYTES_PER_TOKEN_LAYER = 5.0  # parquet bytes per token and layer at top-2 (ids + float16 weights), measured 4.8


def trace_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reusable(path: Path, tokens: int) -> bool:
    """A complete trace with `tokens` rows is already at `path` (left by --keep)."""
    from routelens import RoutelensError, open_trace

    try:
        return (path / "manifest.json").exists() and open_trace(path).num_tokens == tokens
    except (OSError, ValueError, RoutelensError):  # an incomplete or foreign trace: rewrite it
        return False


def ensure_trace(path: Path, tokens: int, layers: int, experts: int, top_k: int) -> float:
    """Write the trace unless it is reusable; seconds spent writing."""
    if reusable(path, tokens):
        return 0.0
    t0 = time.perf_counter()
    child = mp.get_context("fork").Process(target=write_trace, args=(path, tokens, layers, experts, top_k))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"writing {path} failed (exit code {child.exitcode})")
    return time.perf_counter() - t0


def run_analyze(trace: Path, out: Path) -> tuple[float, float]:
    """`routelens analyze` as a child process: (wall seconds, peak RSS in MiB of that child)."""
    cmd = [sys.executable, "-m", "routelens.cli.main", "analyze", str(trace), "--json", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--assignments", type=int, default=500_000_000, help="token-layer assignments N of the smaller trace"
    )
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the traces (default: a fresh temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the traces (reused by the next run with the same --tmp)")
    ap.add_argument("--limit-gb", type=float, default=2.0, help="peak RSS allowed (GB = 10^9 bytes)")
    ap.add_argument("--max-ratio", type=float, default=1.1, help="peak(2N) / peak(N) allowed")
    args = ap.parse_args()

    tokens = args.assignments // args.layers
    if tokens < 1:
        raise SystemExit("--assignments must be at least --layers")
    root = args.tmp if args.tmp is not None else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    sizes = [("N", tokens), ("2N", 2 * tokens)]
    need = sum(
        int(t * args.layers * BYTES_PER_TOKEN_LAYER * args.top_k / 2)
        for name, t in sizes
        if not reusable(root / name, t)
    )
    free = shutil.disk_usage(root).free
    print(f"traces under {root}: ~{need / 1e9:.1f} GB to write, {free / 1e9:.1f} GB free")
    if need * 1.1 > free:
        raise SystemExit(f"not enough disk under {root}: ~{need / 1e9:.1f} GB needed; pass --tmp on a larger disk")

    rows = []
    try:
        for name, t in sizes:
            path = root / name
            wrote = ensure_trace(path, t, args.layers, args.experts, args.top_k)
            gb = trace_size(path) / 1e9
            note = f"written in {wrote:.0f} s" if wrote else "reused"
            print(
                f"{name}: {t:,} tokens x {args.layers} layers = {t * args.layers:,} assignments, {gb:.2f} GB on disk ({note})"
            )
            wall, peak = run_analyze(path, root / f"{name}.json")
            print(f"  routelens analyze: {wall:.1f} s ({t / wall / 1e6:.2f} M tokens/s), peak RSS {peak:.0f} MiB")
            rows.append((name, t * args.layers, wall, peak))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    (_, _, w1, p1), (_, _, w2, p2) = rows
    ratio = p2 / p1
    limit_mib = args.limit_gb * 1e9 / 2**20
    print()
    print(f"{'trace':>6} {'assignments':>14} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, n, wall, peak in rows:
        print(f"{name:>6} {n:>14,} {wall:>8.1f} {peak:>13.0f}")
    print(f"peak(2N) / peak(N) = {ratio:.3f}; wall(2N) / wall(N) = {w2 / w1:.2f}")
    print(
        f"targets: peak <= {limit_mib:.0f} MiB ({args.limit_gb} GB), ratio <= {args.max_ratio}; "
        f"got {max(p1, p2):.0f} MiB, {ratio:.3f}"
    )
    assert max(p1, p2) <= limit_mib, f"peak RSS {max(p1, p2):.0f} MiB over {limit_mib:.0f} MiB"
    assert ratio <= args.max_ratio, f"peak RSS grew {ratio:.3f}x when the trace doubled"


if __name__ == "__main__":
    main()
