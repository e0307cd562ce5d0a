"""A factory for traces with exactly the routing a test plants (every token's experts given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routelens.store import TraceWriter
from routelens.store.reader import TraceChunk
from routelens.store.schema import lookahead_array
from routelens.store.writer import new_manifest
from routelens.synthetic import chunk_table


def write_planted_trace(
    path: Path,
    experts: np.ndarray,
    doc_lengths,
    num_experts: int,
    *,
    layers=None,
    expert_params: int | None = None,
    shards: int = 1,
    lookahead: np.ndarray | None = None,
) -> Path:
    """Write `experts` (tokens, layers, k) as a one-domain trace with the given document lengths,
    and `lookahead` (tokens, layers, D, k) as its lookahead column when given."""
    experts = np.asarray(experts)
    T, L, k = experts.shape
    lengths = np.asarray(doc_lengths)
    assert lengths.sum() == T
    doc_id = np.repeat(np.arange(len(lengths)), lengths)
    position = (np.arange(T) - np.repeat(np.cumsum(lengths) - lengths, lengths)).astype(np.int32)
    chunk = TraceChunk(
        doc_id=doc_id,
        domain=np.zeros(T, np.int32),
        position=position,
        token_id=np.zeros(T, np.int32),
        experts=experts.astype(np.uint8),
        weights=np.full((T, L, k), 1.0 / k, np.float16),
    )
    writer = TraceWriter(path, {"planted": str(path)}, overwrite=True)
    # Shards must hold whole documents: cut at document boundaries.
    doc_ends = np.cumsum(lengths)
    cuts = [0] + [int(doc_ends[i * len(lengths) // shards - 1]) for i in range(1, shards)] + [T]
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        part = TraceChunk(
            **{
                f: getattr(chunk, f)[lo:hi] if getattr(chunk, f) is not None else None
                for f in chunk.__dataclass_fields__
            }
        )
        table = chunk_table(part, ["planted"], num_experts)
        if lookahead is not None:
            table = table.append_column("lookahead", lookahead_array(np.asarray(lookahead)[lo:hi]))
        writer.write_shard(i, table, {"next_doc": int(doc_id[hi - 1]) + 1})
    model = {"name_or_path": "planted", "architecture": "planted", "config_sha256": None}
    if expert_params is not None:
        model["expert_params"] = expert_params
    manifest = new_manifest(
        model=model,
        family="planted",
        routing_rule="planted",
        moe_layers=list(layers or range(L)),
        num_experts=num_experts,
        top_k=k,
        corpora=[{"name": "planted", "source": "test", "documents": len(lengths), "tokens": T}],
        tokenizer={"name": None, "vocab_size": 1},
        seq_len=0,
    )
    manifest.update(complete=True, totals={"tokens": T, "documents": len(lengths)})
    writer.write_manifest(manifest)
    return path


@pytest.fixture
def planted(tmp_path):
    """planted(experts, doc_lengths, num_experts, **kw) -> trace path under tmp_path."""
    counter = iter(range(1000))
    return lambda *args, **kw: write_planted_trace(tmp_path / f"trace{next(counter)}", *args, **kw)
