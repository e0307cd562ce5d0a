"""A trace with exactly the routing, weights and expert-output norms a test plants (two domains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from routelens.store import TraceWriter
from routelens.store.reader import TraceChunk
from routelens.store.schema import nested_array
from routelens.store.writer import new_manifest
from routelens.synthetic import chunk_table

E = 4  # experts; id 4 is the empty slot (weight 0)
LAYERS = [1, 3]
DOMAINS = ["a", "b"]
# per token: domain, then per layer ((expert, weight, norm), (expert, weight, norm))
TOKENS = [
    (0, [((0, 0.75, 2.0), (1, 0.25, 4.0)), ((1, 0.5, 1.0), (2, 0.5, 1.0))]),
    (0, [((0, 0.5, 1.0), (2, 0.5, 2.0)), ((1, 0.5, 1.0), (2, 0.5, 1.0))]),
    (1, [((3, 1.0, 3.0), (4, 0.0, 0.0)), ((1, 0.5, 1.0), (2, 0.5, 1.0))]),
    (1, [((0, 0.5, 6.0), (3, 0.5, 1.0)), ((1, 0.5, 1.0), (2, 0.5, 1.0))]),
]


def write_planted(path: Path, *, norms: bool = True, model: dict | None = None, family: str = "planted") -> Path:
    """The TOKENS as a trace at `path` (one document per domain), with an `expert_norms` column if `norms`."""
    slots = np.array([layers for _, layers in TOKENS], dtype=np.float64)  # (tokens, layers, k, 3)
    domain = np.array([d for d, _ in TOKENS], np.int32)
    n = len(TOKENS)
    chunk = TraceChunk(
        doc_id=domain.astype(np.int64),
        domain=domain,
        position=np.array([0, 1, 0, 1], np.int32),
        token_id=np.arange(n, dtype=np.int32),
        experts=slots[..., 0].astype(np.uint8),
        weights=slots[..., 1].astype(np.float16),
    )
    table = chunk_table(chunk, DOMAINS, E)
    if norms:
        table = table.append_column("expert_norms", nested_array(slots[..., 2].astype(np.float16), pa.float16()))
    writer = TraceWriter(path, {"planted": str(path)}, overwrite=True)
    writer.write_shard(0, table, {"next_doc": 2})
    manifest = new_manifest(
        model=model or {"name_or_path": "planted", "architecture": "planted", "config_sha256": None},
        family=family,
        routing_rule="planted",
        moe_layers=LAYERS,
        num_experts=E,
        top_k=2,
        corpora=[{"name": d, "source": "test", "documents": 1, "tokens": 2} for d in DOMAINS],
        tokenizer={"name": None, "vocab_size": n},
        seq_len=0,
    )
    manifest.update(complete=True, totals={"tokens": n, "documents": 2})
    writer.write_manifest(manifest)
    return path
