"""Per-layer expert streams of a trace gathered in memory, and the shuffled-order control on them.

For small traces, notebooks and tests: a layer's whole stream is held as `(tokens, k)` ids (1
byte per id when E <= 256), as many layers per pass over the trace as fit in `memory_bytes`, so
memory grows with the trace. The simulators do not use this: `simulate_cache` spills the
streams to disk and replays them in blocks (`spill.py`), with memory independent of the tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from routelens.errors import RoutelensError
from routelens.store import Trace

DEFAULT_MEMORY = 2 << 30  # bytes of expert ids gathered per pass over the trace


@dataclass
class LayerStream:
    """One MoE layer's routing, in trace order."""

    layer: int  # true layer index (a value of Trace.layers)
    experts: np.ndarray  # (tokens, k) uint8 | uint16, first choice first
    doc_start: np.ndarray  # (tokens,) bool, True at the first token of each document


def iter_layer_streams(
    trace: Trace, *, memory_bytes: int = DEFAULT_MEMORY, rows: int = 1 << 20
) -> Iterator[LayerStream]:
    """Yield every layer's stream, reading the trace once per group of layers that fits in memory."""
    T, L, k = trace.num_tokens, len(trace.layers), trace.top_k
    if T == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace a non-empty corpus.")
    itemsize = 1 if trace.num_ids <= 256 else 2
    per_layer = T * k * itemsize
    group = max(1, min(L, memory_bytes // max(per_layer, 1)))
    for first in range(0, L, group):
        idx = list(range(first, min(L, first + group)))
        experts = np.empty((len(idx), T, k), dtype=np.uint8 if itemsize == 1 else np.uint16)  # (layers, tokens, k)
        doc_start = np.empty(T, np.bool_)
        offset, prev_doc = 0, None
        for chunk in trace.iter_chunks(rows=rows):
            n = len(chunk)
            experts[:, offset : offset + n] = chunk.experts[:, idx].transpose(1, 0, 2)
            doc = chunk.doc_id
            doc_start[offset] = prev_doc is None or doc[0] != prev_doc
            doc_start[offset + 1 : offset + n] = doc[1:] != doc[:-1]
            prev_doc, offset = doc[-1], offset + n
        assert offset == T, (offset, T)
        for g, i in enumerate(idx):
            validate_experts(trace, experts[g])
            yield LayerStream(trace.layers[i], experts[g], doc_start)


def validate_experts(trace: Trace, experts: np.ndarray) -> None:
    """Expert ids (tokens, k), or (tokens, layers, k), within 0..E-1 and distinct within each token, as top-k routing makes them."""
    E = trace.num_ids
    if experts.size and int(experts.max()) >= E:
        raise RoutelensError(
            f"the trace at {trace.path} routes to expert {int(experts.max())} but declares num_ids={E} (experts + zero-computation experts); "
            "re-trace it (a masked-token sentinel may have been recorded)."
        )
    if experts.shape[-1] > 1:
        ordered = np.sort(experts, axis=-1)
        if np.any(ordered[..., 1:] == ordered[..., :-1]):
            raise RoutelensError(
                f"the trace at {trace.path} has tokens routed twice to the same expert; "
                "the cache simulator needs k distinct experts per token (re-trace the model)."
            )


def shuffled(stream: LayerStream, *, seed: int, within_documents: bool) -> LayerStream:
    """The same tokens in a random order (seeded per layer): locality removed, statistics kept.

    With `within_documents` each document keeps its own tokens (only their order is shuffled), as
    a reset-per-document replay needs; otherwise tokens are permuted over the whole stream.
    """
    rng = np.random.default_rng([seed, stream.layer])
    T = len(stream.experts)
    if within_documents:
        doc_index = np.cumsum(stream.doc_start)
        order = np.lexsort((rng.random(T), doc_index))
    else:
        order = rng.permutation(T)
    return LayerStream(stream.layer, stream.experts[order], stream.doc_start)
