"""Synthetic routing traces with planted structure, whose statistics are known in closed form.

Used by the tests (planted-answer checks of every analysis) and by the benchmarks (traces
of millions of tokens without running a model). The generator is a per-layer Markov chain:
each token's first expert repeats the previous token's with probability `repeat`, and is
otherwise drawn from a distribution (uniform, or one planted per domain); the other k-1
choices are distinct uniform draws. Hence, within documents,

    P(first expert of token i+1 == that of token i) = repeat + (1 - repeat) * sum_e p_e^2

which is `repeat + (1 - repeat) / E` for the uniform draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routelens.store.reader import TraceChunk
from routelens.store.schema import expert_id_numpy, expert_id_type, nested_array, trace_schema
from routelens.store.writer import TraceWriter, new_manifest


@dataclass
class SyntheticSpec:
    num_docs: int = 100  # documents per domain
    doc_len: int = 64  # tokens per document (int), or (low, high) for uniform lengths
    layers: tuple[int, ...] = (0, 1, 2, 3)  # true layer indices (need not be contiguous)
    num_experts: int = 8  # routed experts E
    top_k: int = 2
    # Zero-computation experts Z (LongCat-Flash): ids E..E+Z-1, drawn like the routed ones, so the
    # draws range over num_ids = E + Z and every closed form below reads num_ids for E.
    num_zero_experts: int = 0
    domains: tuple[str, ...] = ("a", "b")
    repeat: float = 0.0  # probability that the first expert repeats the previous token's
    # Optional first-choice distribution per domain, shape (E,); uniform where absent.
    first_dist: dict[str, np.ndarray] = field(default_factory=dict)
    vocab_size: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.num_zero_experts < 0:
            raise ValueError(f"num_zero_experts={self.num_zero_experts} must be >= 0")
        if not 1 <= self.top_k <= self.num_ids:
            raise ValueError(f"top_k={self.top_k} must be within 1..num_ids={self.num_ids}")
        if not 0.0 <= self.repeat <= 1.0:
            raise ValueError(f"repeat={self.repeat} must be a probability")

    @property
    def num_ids(self) -> int:
        return self.num_experts + self.num_zero_experts


def generate(spec: SyntheticSpec, domain_index: int, doc_offset: int, rng: np.random.Generator) -> TraceChunk:
    """All documents of one domain as one chunk."""
    E, k, L = spec.num_ids, spec.top_k, len(spec.layers)
    if isinstance(spec.doc_len, int):
        lengths = np.full(spec.num_docs, spec.doc_len, dtype=np.int64)
    else:
        lengths = rng.integers(spec.doc_len[0], spec.doc_len[1] + 1, size=spec.num_docs)
    n = int(lengths.sum())
    doc_id = np.repeat(np.arange(spec.num_docs, dtype=np.int64) + doc_offset, lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)
    dist = spec.first_dist.get(spec.domains[domain_index])
    experts = np.empty((n, L, k), dtype=expert_id_numpy(E))
    for layer in range(L):
        fresh = rng.choice(E, size=n, p=dist) if dist is not None else rng.integers(0, E, size=n)
        keep = (rng.random(n) < spec.repeat) & (position > 0)
        # Index of the last fresh draw at or before each token: repeats copy it forward.
        last_fresh = np.maximum.accumulate(np.where(keep, 0, np.arange(n)))
        first = fresh[last_fresh]
        experts[:, layer, 0] = first
        if k > 1:
            # k-1 further experts, distinct and different from the first: rank random keys.
            keys = rng.random((n, E))
            keys[np.arange(n), first] = np.inf
            experts[:, layer, 1:] = np.argsort(keys, axis=1)[:, : k - 1]
    raw = rng.random((n, L, k)).astype(np.float32) + 1e-3
    raw[..., 0] += 1.0  # the first choice carries the largest weight
    weights = (raw / raw.sum(-1, keepdims=True)).astype(np.float16)
    return TraceChunk(
        doc_id=doc_id,
        domain=np.full(n, domain_index, dtype=np.int32),
        position=position,
        token_id=rng.integers(0, spec.vocab_size, size=n).astype(np.int32),
        experts=experts,
        weights=weights,
    )


def chunk_table(chunk: TraceChunk, domains: list[str], spec_experts: int):
    """A TraceChunk -> Arrow table in the trace schema (no probs / POS columns)."""
    import pyarrow as pa

    L, k = chunk.experts.shape[1:]
    schema = trace_schema(L, spec_experts, k, weights_dtype=str(chunk.weights.dtype))
    domain = pa.DictionaryArray.from_arrays(pa.array(chunk.domain, pa.int32()), pa.array(domains, pa.string()))
    return pa.Table.from_arrays(
        [
            pa.array(chunk.doc_id, pa.int64()),
            domain,
            pa.array(chunk.position, pa.int32()),
            pa.array(chunk.token_id, pa.int32()),
            nested_array(chunk.experts, expert_id_type(spec_experts)),
            nested_array(chunk.weights, pa.from_numpy_dtype(chunk.weights.dtype)),
        ],
        schema=schema,
    )


def write_synthetic_trace(out_dir: str | Path, spec: SyntheticSpec, *, overwrite: bool = True) -> Path:
    """Write a synthetic trace (one shard per domain) in the real trace format."""
    rng = np.random.default_rng(spec.seed)
    writer = TraceWriter(out_dir, {"synthetic": repr(spec)}, overwrite=overwrite)
    corpora, total, doc_offset = [], 0, 0
    for d, name in enumerate(spec.domains):
        chunk = generate(spec, d, doc_offset, rng)
        writer.write_shard(d, chunk_table(chunk, list(spec.domains), spec.num_ids), {"next_doc": doc_offset})
        doc_offset += spec.num_docs
        corpora.append({"name": name, "source": "synthetic", "documents": spec.num_docs, "tokens": len(chunk)})
        total += len(chunk)
    manifest = new_manifest(
        model={"name_or_path": "synthetic", "architecture": "synthetic", "config_sha256": None},
        family="synthetic",
        routing_rule=f"planted Markov chain, repeat={spec.repeat}",
        moe_layers=list(spec.layers),
        num_experts=spec.num_experts,
        top_k=spec.top_k,
        corpora=corpora,
        tokenizer={"name": None, "vocab_size": spec.vocab_size},
        seq_len=0,
    )
    if spec.num_zero_experts:
        manifest["num_zero_experts"] = spec.num_zero_experts
    manifest.update(complete=True, totals={"tokens": total, "documents": doc_offset})
    writer.write_manifest(manifest)
    return Path(out_dir)
