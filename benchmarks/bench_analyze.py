"""Speed and memory of `routelens.analysis.analyze` against a per-token Python loop.

A synthetic trace (planted Markov routing, 4 domains, documents of 128..896 tokens) is written in
pieces by a child process, so this process's peak RSS is that of the analysis. Then, in this
process:
  analyze   the whole `analyze(trace)`: distributions, domain distances with 200 bootstrap
            replicates, locality with its exact permutation null (closed form), its bootstrap
            intervals and distance curve to 64, vocabulary specialization (input and next token)
            and its count- and load-matched null, co-activation (all pairs and adjacent ranks),
            confidence
  loop      the way common analysis scripts count: for each token, for each layer, Python
            updates of dicts and lists for the same statistics (distributions per domain and
            choice, per-document counts, locality, the distance curve on the same anchors, the
            permutation baseline, vocabulary in/next, co-activation, top-1 weight histogram).
            It skips the bootstraps (resampling per-document counts), the vocabulary null and
            shuffles each document once, not 20 times, so the ratio is conservative.
            It runs (reading included) on a slice; its time is scaled linearly to the trace.

Each trace is timed against routelens' own reader decoding the columns `analyze` needs, in the
same run (the compiled kernels loaded on a small trace first, so numba's compilation is not
timed): issue 25 asks analyze / reader <= 1.5 and a peak RSS <= 1 GiB (analyze's own: the peak is
reset before it where Linux allows), seconds per million tokens at the largest trace within 1.2x
of the smallest, and the whole process `routelens analyze TRACE --json F -q` within 1.5x of a bare
pyarrow read of the same columns decoded to numpy (timed after the in-process runs; the child
reports its own peak RSS). Last, the exact permutation null at top-8 of 256 against the m^2 kernel.

    python benchmarks/bench_analyze.py                    # 1M then 10M tokens x 32 layers x top-2 of 8
    python benchmarks/bench_analyze.py --tokens 1000000   # while developing
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOMAINS = ("web", "code", "math", "books")


def write_trace(
    out: Path, tokens: int, layers: int, experts: int, top_k: int, seed: int = 0, piece: int = 1 << 19
) -> None:
    """Write `tokens` rows in shards of about `piece` rows with bounded memory."""
    from routelens.store.reader import TraceChunk
    from routelens.store.schema import expert_id_numpy
    from routelens.store.writer import TraceWriter, new_manifest
    from routelens.synthetic import chunk_table

    rng = np.random.default_rng(seed)
    E, k, L = experts, top_k, layers
    writer = TraceWriter(out, {"bench": tokens}, overwrite=True)
    written, doc, shard = 0, 0, 0
    per_domain = {d: [0, 0] for d in DOMAINS}
    while written < tokens:
        remaining = tokens - written
        lengths = rng.integers(128, 897, size=max(1, piece // 512))
        if lengths.sum() > remaining:  # last piece: exactly `tokens` rows in all
            lengths = lengths[np.cumsum(lengths) <= remaining]
            lengths = np.append(lengths, remaining - lengths.sum()) if lengths.sum() < remaining else lengths
        n = int(lengths.sum())
        dom = shard % len(DOMAINS)
        doc_id = np.repeat(np.arange(len(lengths), dtype=np.int64) + doc, lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        position = (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)
        ids = np.empty((n, L, k), dtype=expert_id_numpy(E))
        skew = rng.dirichlet(np.full(E, 2.0))  # each shard's domain has its own unbalanced load
        for layer in range(L):
            fresh = rng.choice(E, size=n, p=skew)
            keep = (rng.random(n) < 0.3) & (position > 0)
            first = fresh[np.maximum.accumulate(np.where(keep, 0, np.arange(n)))]
            ids[:, layer, 0] = first
            if k == 2:  # a distinct uniform second choice
                ids[:, layer, 1] = (first + rng.integers(1, E, size=n)) % E
            elif k > 2:
                keys = rng.random((n, E))
                keys[np.arange(n), first] = np.inf
                ids[:, layer, 1:] = np.argsort(keys, axis=1)[:, : k - 1]
        weights = rng.random((n, L, k)).astype(np.float16)
        chunk = TraceChunk(
            doc_id=doc_id,
            domain=np.full(n, dom, np.int32),
            position=position,
            token_id=rng.zipf(1.3, size=n).clip(max=32000).astype(np.int32) - 1,
            experts=ids,
            weights=weights,
        )
        writer.write_shard(shard, chunk_table(chunk, list(DOMAINS), E), {})
        per_domain[DOMAINS[dom]][0] += len(lengths)
        per_domain[DOMAINS[dom]][1] += n
        written, doc, shard = written + n, doc + len(lengths), shard + 1
    manifest = new_manifest(
        model={"name_or_path": "bench", "architecture": "synthetic", "config_sha256": None},
        family="synthetic",
        routing_rule="planted Markov chain",
        moe_layers=list(range(L)),
        num_experts=E,
        top_k=k,
        corpora=[{"name": d, "source": "synthetic", "documents": v[0], "tokens": v[1]} for d, v in per_domain.items()],
        tokenizer={"name": None, "vocab_size": 32000},
        seq_len=0,
    )
    manifest.update(complete=True, totals={"tokens": written, "documents": doc})
    writer.write_manifest(manifest)


def loop_baseline(
    chunk,
    num_layers: int,
    num_experts: int,
    domains: list[str],
    *,
    max_distance: int,
    stride: int,
    first_row: int,
    min_count: int = 10,
    seed: int = 0,
) -> dict:
    """The statistics of `analyze` (except the bootstrap over per-document counts and the
    final ranking of typical tokens) counted token by token in Python, as common scripts do."""
    L, E = num_layers, num_experts
    rand = random.Random(seed)
    experts = chunk.experts.tolist()
    weights = chunk.weights.tolist() if chunk.weights is not None else None
    doc, pos, tok, dom = chunk.doc_id.tolist(), chunk.position.tolist(), chunk.token_id.tolist(), chunk.domain.tolist()
    n = len(experts)
    by_choice = {d: [[[0] * E for _ in range(3)] for _ in range(L)] for d in domains}  # first, second, any
    per_doc: dict[int, list[list[int]]] = {}
    local = {d: [[0, 0, 0] for _ in range(L)] for d in domains}  # first, any, pairs
    curve = {d: [[[0, 0] for _ in range(max_distance)] for _ in range(L)] for d in domains}
    permuted = {d: [[0, 0] for _ in range(L)] for d in domains}
    coact = [[[0] * E for _ in range(E)] for _ in range(L)]
    vocab_in: list[dict] = [{} for _ in range(L)]
    vocab_next: list[dict] = [{} for _ in range(L)]
    top1_hist = [[0] * 20 for _ in range(L)]
    doc_rows: dict[int, list[int]] = {}
    for i in range(n):
        name = domains[dom[i]]
        doc_rows.setdefault(doc[i], []).append(i)
        counts = per_doc.setdefault(doc[i], [[0] * E for _ in range(L)])
        nxt = i + 1 < n and doc[i + 1] == doc[i] and pos[i + 1] == pos[i] + 1
        for layer in range(L):
            chosen = experts[i][layer]
            for c, e in enumerate(chosen):
                by_choice[name][layer][min(c, 1)][e] += 1
                by_choice[name][layer][2][e] += 1
                counts[layer][e] += 1
                vocab_in[layer][(tok[i], e)] = vocab_in[layer].get((tok[i], e), 0) + 1
                if nxt:
                    vocab_next[layer][(tok[i + 1], e)] = vocab_next[layer].get((tok[i + 1], e), 0) + 1
                for b in chosen:
                    if b != e:
                        coact[layer][e][b] += 1
            if weights is not None:
                top1_hist[layer][min(int(weights[i][layer][0] * 20), 19)] += 1
            if nxt:
                after = experts[i + 1][layer]
                local[name][layer][0] += chosen[0] == after[0]
                local[name][layer][1] += bool(set(chosen) & set(after))
                local[name][layer][2] += 1
            if (first_row + i) % stride == 0:
                for d in range(1, max_distance + 1):
                    j = i + d
                    if j >= n or doc[j] != doc[i] or pos[j] != pos[i] + d:
                        break
                    after = experts[j][layer]
                    curve[name][layer][d - 1][0] += chosen[0] == after[0]
                    curve[name][layer][d - 1][1] += bool(set(chosen) & set(after))
    for rows in doc_rows.values():  # permutation baseline: shuffle each document
        rows = rows[:]
        rand.shuffle(rows)
        name = domains[dom[rows[0]]]
        for a, b in itertools.pairwise(rows):
            for layer in range(L):
                x, y = experts[a][layer], experts[b][layer]
                permuted[name][layer][0] += x[0] == y[0]
                permuted[name][layer][1] += bool(set(x) & set(y))
    occurrences: dict[int, int] = {}
    for t in tok:
        occurrences[t] = occurrences.get(t, 0) + 1
    special = []
    for layer in range(L):
        best: dict[int, int] = {}
        for (t, _), c in vocab_in[layer].items():
            best[t] = max(best.get(t, 0), c)
        shares = [best[t] / c for t, c in occurrences.items() if c >= min_count]
        special.append(sum(shares) / len(shares) if shares else None)
    return {"local": local, "vocabulary": special, "permuted": permuted, "curve": curve}


def read_seconds(tr, columns: list[str]) -> float:
    """Seconds routelens' reader takes to decode what `analyze` reads (no analysis)."""
    t0 = time.perf_counter()
    for _ in tr.iter_chunks(columns=columns, rows=1 << 20):
        pass
    return time.perf_counter() - t0


def reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs 5), so that the next
    `peak_mib()` is the peak of what runs in between; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """Peak RSS in MiB since the last reset_peak() (VmHWM), else of the whole process."""
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)


def pyarrow_seconds(tr, columns: list[str]) -> float:
    """Seconds a bare pyarrow read of the same columns takes, decoded to numpy (no routelens code):
    the whole-process target of issue 25."""
    import pyarrow.dataset as ds

    names = ["doc_id", "domain", "position", "token_id", "experts", *columns]
    t0 = time.perf_counter()
    for batch in ds.dataset([str(p) for p in tr.shards], format="parquet").to_batches(
        columns=names, batch_size=1 << 20
    ):
        for name in names:
            col = batch.column(name)
            if name == "domain":
                col.indices.to_numpy() if hasattr(col, "indices") else col.to_numpy(zero_copy_only=False)
            elif name in ("experts", "weights"):
                col.flatten().flatten().to_numpy(zero_copy_only=False)
            else:
                col.to_numpy(zero_copy_only=False)
    return time.perf_counter() - t0


def process_seconds(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `routelens analyze TRACE --json F -q` as its own process.
    The child reports its own VmHWM (its ru_maxrss would start from this process's RSS at the fork)."""
    peak = out.with_suffix(".peak")
    code = (
        "import atexit, sys; peak = sys.argv.pop(); atexit.register(lambda: open(peak, 'w').write("
        "[x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1])); "
        "from routelens.cli.main import main; sys.exit(main())"
    )
    argv = [sys.executable, "-c", code, "analyze", str(path), "--json", str(out), "-q", str(peak)]
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)  # the summary tables are timed, not shown
    seconds = time.perf_counter() - t0
    return seconds, int(peak.read_text()) / 1024


def large_e_null(tokens: int = 200_000, layers: int = 4, experts: int = 256, top_k: int = 8) -> None:
    """The exact permutation null at top-8 of 256 (documents of 128..896 tokens, mostly distinct
    sets): the per-expert lists of distinct sets against the m^2 mask tests they replace."""
    from routelens.analysis.pairs import layer_major, mask_dtype
    from routelens.analysis.permutation_null import document_moments, document_moments_rows
    from routelens.analysis.row_kernels import token_rows_of
    from routelens.store.schema import expert_id_numpy

    rng = np.random.default_rng(0)
    lengths = rng.integers(128, 897, size=tokens // 512)
    n = int(lengths.sum())
    ids = np.argsort(rng.random((n * layers, experts)), axis=1)[:, :top_k].reshape(n, layers, top_k)
    ids = ids.astype(expert_id_numpy(experts))
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dtype, words = mask_dtype(experts)
    first, mask = token_rows_of(ids, experts)
    lm_first, lm_mask = (np.ascontiguousarray(a) for a in layer_major(ids, experts))
    args = (first, mask, words, dtype.itemsize * 8, starts, experts, False, 16)
    document_moments_rows(*args[:4], starts[:3], experts, False, 2)  # compiled (or loaded) first
    document_moments(lm_first, lm_mask, starts[:3], experts, False)
    t0 = time.perf_counter()
    fast = document_moments_rows(*args)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = document_moments(lm_first, lm_mask, starts, experts, False)
    t_slow = time.perf_counter() - t0
    assert np.allclose(fast, slow, rtol=1e-10), "the two null kernels disagree"
    print(
        f"exact null at top-{top_k} of {experts} ({n:,} tokens x {layers} layers, documents of 128..896): "
        f"{t_fast / n * 1e6:.2f} s per million tokens, pairwise m^2 kernel {t_slow / n * 1e6:.2f} s "
        f"({t_slow / t_fast:.1f}x); the same moments"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tokens", type=int, nargs="+", default=[1_000_000, 10_000_000], help="rows of each synthetic trace, in turn"
    )
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--loop-tokens", type=int, default=20_000, help="rows given to the per-token loop (0: skip it)")
    ap.add_argument("--trace", type=Path, default=None, help="keep the traces under this folder (reused if they exist)")
    ap.add_argument("--no-process", action="store_true", help="skip the whole-process timing (routelens analyze)")
    args = ap.parse_args()

    from routelens import open_trace
    from routelens.analysis import analyze

    tmp = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    root = args.trace or tmp

    def trace_of(tokens: int) -> Path:
        path = root / f"trace-{tokens}"
        if not (path / "manifest.json").exists():
            t0 = time.perf_counter()
            child = mp.get_context("fork").Process(
                target=write_trace, args=(path, tokens, args.layers, args.experts, args.top_k)
            )
            child.start()
            child.join()
            assert child.exitcode == 0, "trace generation failed"
            print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
        return path

    # The compiled kernels are loaded (or compiled, the first time) on a small trace first:
    # the timings below exclude numba's compilation.
    analyze(open_trace(trace_of(20_000)), progress=False)
    rows = []
    for tokens in args.tokens:
        tr = open_trace(trace_of(tokens))
        n = tr.num_tokens
        print(
            f"trace: {n:,} tokens x {len(tr.layers)} layers, top-{tr.top_k} of {tr.num_experts}, {len(tr.domains)} domains"
        )
        columns = [c for c in ("weights", "probs", "lookahead") if tr.has(c)]
        read_seconds(tr, columns)  # the page cache warm for both timings
        reset = reset_peak()  # the peak of analyze alone, not of the reader's 1M-row chunks above
        t0 = time.perf_counter()
        result = analyze(tr, progress=False)
        t_analyze = time.perf_counter() - t0
        peak = peak_mib()
        t_read = read_seconds(tr, columns)
        del result["vocabulary_tokens"]  # the rest is kept for the loop's check
        print(
            f"  analyze {t_analyze:.1f} s, reader alone {t_read:.1f} s (experts, doc ids, positions, domains, "
            f"token ids, {', '.join(columns)}): analyze / reader {t_analyze / t_read:.2f}, "
            f"{t_analyze / n * 1e6:.2f} s per million tokens, peak RSS {peak:.0f} MiB "
            f"({'of analyze' if reset else 'of the process so far'})"
        )
        rows.append([n, t_analyze, t_read, peak, None])
    # The whole process after every in-process timing (pyarrow's own read-ahead would raise this
    # process's peak RSS): `routelens analyze` against a bare pyarrow read, in turn.
    for row, tokens in zip(rows, args.tokens):
        if args.no_process:
            break
        tr = open_trace(trace_of(tokens))
        columns = [c for c in ("weights", "probs", "lookahead") if tr.has(c)]
        t_arrow = pyarrow_seconds(tr, columns)
        t_proc, rss = process_seconds(tr.path, root / f"analysis-{tokens}.json")
        t_arrow = min(t_arrow, pyarrow_seconds(tr, columns))
        row[4] = (t_proc, t_arrow, rss)
        print(
            f"whole process, {tr.num_tokens:,} tokens: routelens analyze --json -q {t_proc:.1f} s (peak RSS {rss:.0f} "
            f"MiB), bare pyarrow read of the same columns to numpy {t_arrow:.1f} s: ratio {t_proc / t_arrow:.2f}"
        )
    if args.loop_tokens:
        stride = result["meta"]["params"]["distance_stride"]
        t0 = time.perf_counter()
        piece = next(tr.iter_chunks(columns=["weights"], rows=args.loop_tokens))
        ref = loop_baseline(
            piece, len(tr.layers), tr.num_experts, tr.domains, max_distance=64, stride=stride, first_row=0
        )
        t_loop = (time.perf_counter() - t0) * n / len(piece)
        print(
            f"per-token loop (same statistics, same distance stride {stride}): {len(piece):,} tokens in "
            f"{t_loop * len(piece) / n:.1f} s -> {t_loop:.0f} s for the last trace (extrapolated); "
            f"speed-up {t_loop / t_analyze:.0f}x"
        )
        name = tr.domains[int(piece.domain[0])]
        first, _, pairs = ref["local"][name][0]
        print(
            f"check: layer-0 locality 'first' of {name}: loop on the slice {first / max(pairs, 1):.4f}, "
            f"analyze on the whole trace {result['locality'][name]['0']['first']:.4f}"
        )
    large_e_null()
    print(
        "targets (issue 25): analyze / reader <= 1.5, peak RSS <= 1024 MiB, whole process / pyarrow <= 1.5, "
        "s/M tokens at the largest trace within 1.2x of the smallest"
    )
    for n, t_analyze, t_read, peak, process in rows:
        line = (
            f"  {n / 1e6:g}M tokens: {t_analyze / n * 1e6:.2f} s/M tokens, analyze / reader {t_analyze / t_read:.2f} "
            f"(limit 1.5: {t_analyze / t_read / 1.5:.2f} of it), peak RSS {peak:.0f} MiB ({peak / 1024:.2f} of 1 GiB)"
        )
        if process is not None:
            line += f", whole process / pyarrow {process[0] / process[1]:.2f}, its peak RSS {process[2]:.0f} MiB"
        print(line)
    if len(rows) > 1:
        growth = (rows[-1][1] / rows[-1][0]) / (rows[0][1] / rows[0][0])
        print(f"  s/M tokens at {rows[-1][0] / 1e6:g}M / at {rows[0][0] / 1e6:g}M: {growth:.2f} (limit 1.2)")
    print(f"  load average when done: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp)  # the traces too unless --trace kept them elsewhere


if __name__ == "__main__":
    main()
