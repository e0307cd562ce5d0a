"""Planted traces for the tests of routelens.analysis: chunks built in numpy whose statistics are
known, written in the real trace format, plus brute-force per-token reference counts."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from routelens.store.reader import TraceChunk
from routelens.store.schema import expert_id_numpy
from routelens.store.writer import TraceWriter, new_manifest
from routelens.synthetic import chunk_table


def make_chunk(doc_lengths, experts: np.ndarray, *, domain=None, token_id=None, first_doc: int = 0) -> TraceChunk:
    """Rows of documents with the given lengths; experts (n, L, k) as given."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    n = int(lengths.sum())
    assert experts.shape[0] == n
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    doc_id = np.repeat(np.arange(len(lengths), dtype=np.int64) + first_doc, lengths)
    position = (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)
    weights = np.full(experts.shape, 1.0 / experts.shape[2], dtype=np.float16)
    return TraceChunk(
        doc_id=doc_id,
        domain=np.zeros(n, np.int32) if domain is None else np.asarray(domain, np.int32),
        position=position,
        token_id=np.zeros(n, np.int32) if token_id is None else np.asarray(token_id, np.int32),
        experts=experts,
        weights=weights,
    )


def random_experts(n: int, layers: int, E: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, L, k) distinct uniform top-k ids."""
    keys = rng.random((n * layers, E))
    return np.argsort(keys, axis=1)[:, :k].reshape(n, layers, k).astype(expert_id_numpy(E))


def write_trace(
    path: Path,
    chunk: TraceChunk,
    *,
    domains=("a",),
    E: int,
    layers,
    shard_rows: int | None = None,
    vocab=None,
    seq_len: int = 0,
) -> Path:
    """Write `chunk` as a trace (optionally split into shards of shard_rows rows); `seq_len` is
    the window length the manifest records (0: unknown, as in imported traces)."""
    n = len(chunk)
    k = chunk.experts.shape[2]
    writer = TraceWriter(path, {"test": str(path)}, overwrite=True)
    step = shard_rows or max(n, 1)
    for i, lo in enumerate(range(0, n, step)):
        part = TraceChunk(**{f: (None if v is None else v[lo : lo + step]) for f, v in vars(chunk).items()})
        writer.write_shard(i, chunk_table(part, list(domains), E), {})
    if vocab is not None:
        writer.write_vocab(vocab)
    corpora = [
        {
            "name": d,
            "source": "test",
            "documents": len(np.unique(chunk.doc_id[chunk.domain == j])),
            "tokens": int((chunk.domain == j).sum()),
        }
        for j, d in enumerate(domains)
    ]
    manifest = new_manifest(
        model={"name_or_path": "planted", "architecture": "planted", "config_sha256": None},
        family="planted",
        routing_rule="planted",
        moe_layers=list(layers),
        num_experts=E,
        top_k=k,
        corpora=corpora,
        tokenizer={"name": None, "vocab_size": int(chunk.token_id.max()) + 1 if n else 1},
        seq_len=seq_len,
    )
    manifest.update(complete=True, totals={"tokens": n, "documents": len(np.unique(chunk.doc_id))})
    writer.write_manifest(manifest)
    return path


def markov_first(
    doc_lengths, E: int, stay: float, rng: np.random.Generator, *, layers: int = 1, reset_every: int = 0
) -> np.ndarray:
    """(n, layers, 1) first experts: each token keeps the previous token's expert with
    probability `stay`, else draws uniformly, so P(same consecutive first expert) = stay +
    (1 - stay) / E exactly. Every document starts fresh, and so does every position that is a
    multiple of `reset_every` (> 0): a planted window boundary."""
    out = []
    for m in np.asarray(doc_lengths).tolist():
        cur = rng.integers(0, E, layers)
        rows = []
        for p in range(m):
            fresh = p == 0 or (reset_every > 0 and p % reset_every == 0)
            draw = rng.integers(0, E, layers)
            cur = draw if fresh else np.where(rng.random(layers) < stay, cur, draw)
            rows.append(cur.copy())
        out.append(np.array(rows))
    return np.concatenate(out)[:, :, None].astype(np.uint8)


# -- brute-force references: plain per-token Python loops --------------------------------------
def brute_locality(chunk: TraceChunk, d: int = 1, stride: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled (first, any) shares per layer over pairs (i, i+d), anchors i % stride == 0."""
    L = chunk.experts.shape[1]
    first, any_, pairs = np.zeros(L), np.zeros(L), 0
    for i in range(0, len(chunk) - d, stride):
        j = i + d
        if chunk.doc_id[i] != chunk.doc_id[j] or chunk.position[j] != chunk.position[i] + d:
            continue
        pairs += 1
        for layer in range(L):
            a, b = chunk.experts[i, layer], chunk.experts[j, layer]
            first[layer] += a[0] == b[0]
            any_[layer] += bool(set(a.tolist()) & set(b.tolist()))
    return first / max(pairs, 1), any_ / max(pairs, 1), pairs


def brute_coactivation(experts: np.ndarray, E: int) -> np.ndarray:
    n, L, _ = experts.shape
    both = np.zeros((L, E, E))
    single = np.zeros((L, E))
    for t in range(n):
        for layer in range(L):
            chosen = experts[t, layer].tolist()
            for e in chosen:
                single[layer, e] += 1
            for a, b in combinations(chosen, 2):
                both[layer, a, b] += 1
                both[layer, b, a] += 1
    out = np.divide(both, single[:, :, None], out=np.zeros_like(both), where=single[:, :, None] > 0)
    for e in range(E):
        out[:, e, e] = 0.0
    return out


def brute_specialization(token_id: np.ndarray, experts: np.ndarray, min_count: int) -> np.ndarray:
    n, L, _ = experts.shape
    out = np.zeros(L)
    for layer in range(L):
        per_token: dict[int, dict[int, int]] = {}
        occ: dict[int, int] = {}
        for t in range(n):
            tok = int(token_id[t])
            occ[tok] = occ.get(tok, 0) + 1
            for e in experts[t, layer].tolist():
                per_token.setdefault(tok, {})[e] = per_token.setdefault(tok, {}).get(e, 0) + 1
        values = [max(per_token[tok].values()) / c for tok, c in occ.items() if c >= min_count]
        out[layer] = np.mean(values) if values else np.nan
    return out
