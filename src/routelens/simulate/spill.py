"""Layer streams spilled to disk, so that the cache simulator replays layers of any length with
memory that does not grow with the number of tokens.

A cache is simulated per layer over that layer's whole stream; Belady looks ahead to the end of
it and the shuffled control permutes all of it. One pass over the trace (`spill_layers`) writes,
under a folder the caller owns (a temporary directory):

    layer-{i}.bin   (tokens, k) expert ids of the i-th MoE layer, uint8 when E <= 256, else uint16
    starts.bin      (tokens,) bool, True at the first token of each document

    predicted-{i}.bin   (tokens, k) with `lookahead_distance` d: the experts layer i - d's router
                    input chose under layer i's router (the trace's `lookahead` column), or
                    NO_PREDICTION where i < d; ids widen to uint16 when E = 256 to make room

that is tokens x (layers x k x itemsize + 1) bytes: the trace's expert column, uncompressed
(500M token-layer assignments at top-2: 1 GB). The replay then reads one layer back in blocks
(`SpilledLayers.blocks`), and Belady's next-use indices come from a backward pass over the
layer's file into a second file (`next_use_file`, 4 bytes per request), read in the same blocks.

Orders:

- `trace`: as recorded.
- `documents`: each document's tokens in a seeded random order, documents in place (the control
  of a reset-per-document replay). A document is held whole while it is shuffled, so memory is
  bounded by the longest document, not by the trace.
- `shuffled`: one seeded uniform permutation of all tokens, shared by every layer, made by an
  external shuffle: each token goes to one of M bucket files uniformly at random (M = tokens /
  `BUCKET_ROWS`, rounded up), then each bucket is read back, permuted uniformly and appended. Buckets drawn iid uniformly, each permuted uniformly, give a uniformly random
  permutation of the whole stream. Document starts mean nothing after it: only token 0 starts.

Every random draw is made per token in trace order from one generator (and per bucket from a
generator seeded with the bucket), and M depends on the number of tokens only, so the order
depends on the seed, not on how the trace is sharded or chunked or on the memory budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.errors import RoutelensError
from routelens.simulate.next_use import NEVER, next_use_block, next_use_distances
from routelens.simulate.streams import validate_experts
from routelens.store import Trace

ORDERS = ("trace", "documents", "shuffled")
LOOKAHEAD_COLUMN = "lookahead"
MIN_ROWS = 1 << 12  # smallest block, whatever the memory budget
BUCKET_ROWS = 1 << 19  # tokens per shuffle bucket on average (32 MiB at 32 layers x top-2)


@dataclass
class SpilledLayers:
    """The layer streams of one trace, on disk under `folder`."""

    folder: Path
    layers: list[int]  # true layer indices, in file order
    tokens: int
    top_k: int
    num_ids: int  # experts + zero-computation experts: the ids the streams hold
    dtype: np.dtype  # of the expert ids
    predicted: bool = False  # predicted-{i}.bin were written too (lookahead)

    def path(self, i: int) -> Path:
        """Layer i's stream; i in L..2L-1 names layer i - L's predictions (`predicted-*.bin`)."""
        L = len(self.layers)
        return self.folder / (f"layer-{i}.bin" if i < L else f"predicted-{i - L}.bin")

    @property
    def no_prediction(self) -> int:
        """The id written where a layer has no prediction: never an expert id (>= E)."""
        return int(np.iinfo(self.dtype).max)

    @property
    def starts_path(self) -> Path:
        return self.folder / "starts.bin"

    def blocks(self, i: int, rows: int, *, reverse: bool = False) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first token, experts (n, k), document starts (n,) bool) of layer i, `rows` tokens at a
        time, first block first (or last first with `reverse`)."""
        T, k, size = self.tokens, self.top_k, self.dtype.itemsize
        firsts = range(0, T, max(1, rows))
        with open(self.path(i), "rb") as f, open(self.starts_path, "rb") as g:
            for lo in reversed(firsts) if reverse else firsts:
                n = min(rows, T - lo)
                f.seek(lo * k * size)
                g.seek(lo)
                experts = np.fromfile(f, self.dtype, count=n * k).reshape(n, k)
                starts = np.fromfile(g, np.bool_, count=n)
                yield lo, experts, starts

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer i whole, (tokens, k) and (tokens,): for small traces and tests."""
        return next(self.blocks(i, self.tokens))[1:]

    def rows(self, i: int, first: int, n: int) -> np.ndarray:
        """Rows first..first+n-1 (n, k) of stream i (a layer, or L + i for its predictions)."""
        k, size = self.top_k, self.dtype.itemsize
        with open(self.path(i), "rb") as f:
            f.seek(first * k * size)
            return np.fromfile(f, self.dtype, count=n * k).reshape(n, k)

    def remove(self, i: int) -> None:
        self.path(i).unlink(missing_ok=True)
        if self.predicted:
            self.path(len(self.layers) + i).unlink(missing_ok=True)


def spill_layers(
    trace: Trace,
    folder: Path,
    *,
    order: str = "trace",
    seed: int = 0,
    rows: int = 1 << 20,
    bucket_rows: int = BUCKET_ROWS,
    lookahead_distance: int | None = None,
) -> SpilledLayers:
    """Write every layer's stream of `trace` under `folder` in `order` (see the module doc), and
    with `lookahead_distance` d each layer's predictions from the `lookahead` column."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; choose among {ORDERS}")
    T, L, k, E = trace.num_tokens, len(trace.layers), trace.top_k, trace.num_ids
    if T == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace a non-empty corpus.")
    if lookahead_distance is not None:
        trace.require(LOOKAHEAD_COLUMN, "the lookahead cache policy")
    dtype = np.dtype(np.uint8 if E < 256 or (E == 256 and lookahead_distance is None) else np.uint16)
    out = SpilledLayers(Path(folder), list(trace.layers), T, k, E, dtype, predicted=lookahead_distance is not None)
    out.folder.mkdir(parents=True, exist_ok=True)
    columns = [LOOKAHEAD_COLUMN] if out.predicted else None
    row_of = lambda chunk: _rows(trace, chunk, out, lookahead_distance)  # noqa: E731
    if order == "shuffled":
        _spill_shuffled(trace, out, seed, rows, bucket_rows, columns, row_of)
        return out
    rng = np.random.default_rng(seed)
    files = [open(out.path(i), "wb") for i in range(L * (1 + out.predicted))]
    try:
        with open(out.starts_path, "wb") as starts_file:
            prev_doc = None
            held: tuple[np.ndarray, np.ndarray] | None = None  # (rows, doc ids) of the open document
            for chunk in trace.iter_chunks(columns, rows=rows):
                experts, doc = row_of(chunk), chunk.doc_id
                start = np.empty(len(doc), np.bool_)
                start[0] = prev_doc is None or doc[0] != prev_doc
                start[1:] = doc[1:] != doc[:-1]
                prev_doc = doc[-1]
                start.tofile(starts_file)
                if order == "trace":
                    _write_layers(files, experts)
                    continue
                if held is not None:
                    experts, doc = np.concatenate([held[0], experts]), np.concatenate([held[1], doc])
                cut = _last_doc_start(doc)  # the last document may continue in the next chunk
                held = (experts[cut:].copy(), doc[cut:].copy())
                if cut:
                    _write_layers(files, _shuffle_documents(experts[:cut], doc[:cut], rng))
            if held is not None and len(held[1]):
                _write_layers(files, _shuffle_documents(*held, rng))
    finally:
        for f in files:
            f.close()
    return out


def _rows(trace: Trace, chunk, out: SpilledLayers, distance: int | None) -> np.ndarray:
    """The rows a chunk spills, validated: (n, L, k) expert ids, then with `distance` d the L
    layers' predictions (n, 2L, k): layer i's from the `lookahead` column at layer i - d."""
    validate_experts(trace, chunk.experts)
    experts = chunk.experts.astype(out.dtype, copy=False)
    if distance is None:
        return experts
    ahead = chunk.lookahead  # (n, L, D, k)
    if distance > ahead.shape[2]:
        raise RoutelensError(
            f"--lookahead-distance {distance} exceeds the {ahead.shape[2]} layers ahead the trace at {trace.path} "
            f"recorded; pass 1..{ahead.shape[2]} or re-trace with --lookahead {distance}."
        )
    n, L, k = experts.shape
    predicted = np.full((n, L, k), out.no_prediction, out.dtype)
    guess = ahead[:, : L - distance, distance - 1]  # (n, L - d, k): predictions for layers d..L-1
    predicted[:, distance:] = np.where((guess >= 0) & (guess < out.num_ids), guess, out.no_prediction)
    return np.concatenate([experts, predicted], axis=1)


def _spill_shuffled(trace: Trace, out: SpilledLayers, seed: int, rows: int, bucket_rows: int, columns, row_of) -> None:
    T, L, k = out.tokens, len(out.layers) * (1 + out.predicted), out.top_k
    buckets = max(1, -(-T // max(1, bucket_rows)))
    bucket_path = [out.folder / f"bucket-{b}.bin" for b in range(buckets)]
    rng = np.random.default_rng(seed)
    for chunk in trace.iter_chunks(columns, rows=rows):  # 1. deal tokens into buckets at random
        spilled = row_of(chunk)
        bucket = np.minimum((rng.random(len(chunk)) * buckets).astype(np.int64), buckets - 1)
        order = np.argsort(bucket, kind="stable")
        dealt = spilled[order]
        ends = np.cumsum(np.bincount(bucket, minlength=buckets))
        for b in np.flatnonzero(np.diff(ends, prepend=0)).tolist():
            with open(bucket_path[b], "ab") as f:
                dealt[ends[b - 1] if b else 0 : ends[b]].tofile(f)
    files = [open(out.path(i), "wb") for i in range(L)]
    try:
        for b, path in enumerate(bucket_path):  # 2. permute each bucket, append in bucket order
            if not path.exists():
                continue
            rows_b = np.fromfile(path, out.dtype).reshape(-1, L, k)
            path.unlink()
            _write_layers(files, rows_b[np.random.default_rng([seed, b]).permutation(len(rows_b))])
    finally:
        for f in files:
            f.close()
    starts = np.zeros(min(T, 1 << 20), np.bool_)
    with open(out.starts_path, "wb") as f:
        for lo in range(0, T, len(starts)):
            part = starts[: min(len(starts), T - lo)]
            part[0] = lo == 0
            part.tofile(f)


def _write_layers(files, experts: np.ndarray) -> None:
    """Append rows (n, L, k) to the per-layer files."""
    by_layer = np.ascontiguousarray(experts.transpose(1, 0, 2))  # (L, n, k)
    for i, f in enumerate(files):
        by_layer[i].tofile(f)


def _shuffle_documents(experts: np.ndarray, doc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of whole documents, each document's rows in a random order, documents in place."""
    number = np.cumsum(np.concatenate([[0], doc[1:] != doc[:-1]]))
    return experts[np.lexsort((rng.random(len(doc)), number))]


def _last_doc_start(doc: np.ndarray) -> int:
    change = np.flatnonzero(doc[1:] != doc[:-1])
    return int(change[-1]) + 1 if len(change) else 0


def next_use_file(spilled: SpilledLayers, i: int, *, reset_per_document: bool, rows: int) -> Path:
    """Belady's next-use indices of layer i (see `cache_kernels.next_use_indices`), by a backward
    pass over its file, written to `next-{i}.bin` as uint32 distances to the next use (0: never)
    when the stream has fewer than 2^32 requests, else as int64 indices. Read with `read_next_use`."""
    T, k = spilled.tokens, spilled.top_k
    dtype = _next_use_dtype(T * k)
    path = spilled.folder / f"next-{i}.bin"
    last = np.full(spilled.num_ids, NEVER, np.int64)
    with open(path, "wb") as f:
        for lo, experts, starts in spilled.blocks(i, rows, reverse=True):
            segment = starts if reset_per_document else np.zeros(len(starts), np.bool_)
            if dtype == np.uint32:
                nxt = next_use_distances(experts, segment, last, lo * k)  # uint32: the stream is short enough
            else:
                nxt = next_use_block(experts, segment, last, lo * k)  # int64 indices
            f.seek(lo * k * dtype.itemsize)
            nxt.tofile(f)
    return path


def read_next_use(path: Path, tokens: int, top_k: int, first: int, n: int) -> np.ndarray:
    """Next-use indices (n * k,) int64 of tokens first..first+n-1 from a `next_use_file`."""
    dtype = _next_use_dtype(tokens * top_k)
    with open(path, "rb") as f:
        f.seek(first * top_k * dtype.itemsize)
        raw = np.fromfile(f, dtype, count=n * top_k)
    if dtype == np.int64:
        return raw
    index = first * top_k + np.arange(len(raw), dtype=np.int64)
    return np.where(raw == 0, NEVER, index + raw.astype(np.int64))


def read_next_use_raw(path: Path, tokens: int, top_k: int, first: int, n: int) -> np.ndarray:
    """The next uses of tokens first..first+n-1 as stored, uint32 distances or int64 indices: what
    `cache_kernels.replay` reads for Belady with no conversion (the uint32 case)."""
    dtype = _next_use_dtype(tokens * top_k)
    with open(path, "rb") as f:
        f.seek(first * top_k * dtype.itemsize)
        return np.fromfile(f, dtype, count=n * top_k)


def _next_use_dtype(requests: int) -> np.dtype:
    return np.dtype(np.uint32 if requests < (1 << 32) - 1 else np.int64)
