"""Planted POS traces for the tests of routelens.analysis.pos: routing whose tag dependence is known.

`planted_words` draws sentences of words with tags and multi-token words; `route_*` functions
plant the routing; `write_pos_trace` writes the result in the real trace format (word_index and
upos columns added to `routelens.synthetic.chunk_table`'s table), so the tests go through the
reader and the word selection like real data.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa

from routelens.corpus.upos import UPOS_TAGS
from routelens.store.reader import TraceChunk
from routelens.store.schema import expert_id_numpy, trace_schema
from routelens.store.writer import TraceWriter, new_manifest
from routelens.synthetic import chunk_table


def planted_words(
    num_docs: int,
    words_per_doc: int,
    tags: list[str],
    seed: int = 0,
    max_pieces: int = 3,
) -> dict:
    """Token rows of `num_docs` sentences: every word has 1..max_pieces tokens; the first row of
    each sentence is an untagged BOS token (word_index -1), as the tracer records it."""
    rng = np.random.default_rng(seed)
    codes = np.array([UPOS_TAGS.index(t) for t in tags])
    doc, widx, upos, token = [], [], [], []
    for d in range(num_docs):
        doc.append(d), widx.append(-1), upos.append(-1), token.append(0)
        for w in range(words_per_doc):
            tag = codes[rng.integers(len(codes))]
            pieces = int(rng.integers(1, max_pieces + 1))
            for _ in range(pieces):
                (
                    doc.append(d),
                    widx.append(w),
                    upos.append(tag),
                    token.append(int(rng.integers(1, 200))),
                )
    return {
        "doc_id": np.array(doc, np.int64),
        "word_index": np.array(widx, np.int32),
        "upos": np.array(upos, np.int32),
        "token_id": np.array(token, np.int32),
    }


def random_routing(n: int, L: int, E: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, L, k) distinct uniform experts per token and layer."""
    return np.argsort(rng.random((n, L, E)), axis=-1)[..., :k].astype(expert_id_numpy(E))


def write_pos_trace(
    path: Path,
    rows: dict,
    experts: np.ndarray,
    layers: tuple[int, ...],
    E: int,
    shard_rows: int = 0,
) -> Path:
    """Write rows + routing as a trace with POS columns (several shards when shard_rows > 0)."""
    n, L, k = experts.shape
    starts = np.flatnonzero(np.r_[True, rows["doc_id"][1:] != rows["doc_id"][:-1]])
    positions = (np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))).astype(np.int32)
    chunk = TraceChunk(
        doc_id=rows["doc_id"],
        domain=np.zeros(n, np.int32),
        position=positions,
        token_id=rows["token_id"],
        experts=experts,
        weights=np.full((n, L, k), 1.0 / k, np.float16),
    )
    writer = TraceWriter(path, {"planted": str(path)}, overwrite=True)
    schema = trace_schema(L, E, k, with_pos=True)
    bounds = list(range(0, n, shard_rows or n)) + [n]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = TraceChunk(**{f: (v[a:b] if v is not None else None) for f, v in vars(chunk).items()})
        table = chunk_table(part, ["ewt"], E)
        widx, upos = rows["word_index"][a:b], rows["upos"][a:b]
        table = table.append_column("word_index", pa.array(widx, pa.int32(), mask=widx < 0))
        table = table.append_column(
            "upos",
            pa.DictionaryArray.from_arrays(pa.array(upos, pa.int32(), mask=upos < 0), pa.array(UPOS_TAGS)),
        )
        writer.write_shard(i, table.cast(schema), {"next_doc": int(rows["doc_id"][b - 1]) + 1})
    manifest = new_manifest(
        model={"name_or_path": "planted", "architecture": "planted", "config_sha256": None},
        family="planted",
        routing_rule="planted",
        moe_layers=list(layers),
        num_experts=E,
        top_k=k,
        corpora=[{"name": "ewt", "source": "planted", "documents": int(rows["doc_id"].max()) + 1, "tokens": n}],
        tokenizer={"name": None, "vocab_size": 200},
        seq_len=0,
    )
    manifest.update(complete=True, totals={"tokens": n, "documents": int(rows["doc_id"].max()) + 1})
    writer.write_manifest(manifest)
    return path
