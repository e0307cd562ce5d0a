"""Arrow schema of a routing trace shard, and the conversion from numpy arrays to a table.

One row per recorded token. Per-layer columns are fixed-size lists over MoE layers of
fixed-size lists over the k choices (or E experts for `probs`), so a shard converts to a
numpy array of shape (tokens, layers, k) without copying.

Format versions: 1 always has `weights`; 2 (this release) makes `weights` optional (traces
imported from serving engines record experts only) and adds the optional `phase` column.
A reader of version N reads every version up to N and refuses a newer one.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FORMAT_NAME = "routelens-trace"
FORMAT_VERSION = 2  # written by this release; READABLE_VERSIONS are read
READABLE_VERSIONS = (1, 2)
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
PHASES = ("prefill", "decode")  # values of the `phase` column: the prompt's rows, then generated tokens'
LOOKAHEAD_FILL = -1  # `lookahead` value where MoE layer l + d does not exist (past the last MoE layer)


def expert_id_type(num_experts: int) -> pa.DataType:
    """uint8 holds ids of up to 256 experts; beyond that uint16."""
    return pa.uint8() if num_experts <= 256 else pa.uint16()


def expert_id_numpy(num_experts: int) -> np.dtype:
    return np.dtype(np.uint8) if num_experts <= 256 else np.dtype(np.uint16)


def _nested(value_type: pa.DataType, layers: int, width: int) -> pa.DataType:
    return pa.list_(pa.list_(value_type, width), layers)


def trace_schema(
    num_layers: int,
    num_experts: int,
    top_k: int,
    *,
    weights_dtype: str = "float16",
    store_probs: bool = False,
    with_pos: bool = False,
    with_weights: bool = True,
    with_phase: bool = False,
    store_expert_norms: bool = False,
    lookahead: int = 0,
    id_span: int | None = None,
    with_request_id: bool = False,
) -> pa.Schema:
    """The shard schema; `weights` is left out with `with_weights=False` (format version 2).
    Expert ids take the smallest type holding `id_span` ids (default: the E routed experts; more
    with zero-computation experts or an empty-slot id, see docs/trace-format.md)."""
    fields = [
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("domain", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("experts", _nested(expert_id_type(id_span or num_experts), num_layers, top_k), nullable=False),
    ]
    if with_weights:
        fields.append(
            pa.field(
                "weights", _nested(pa.from_numpy_dtype(np.dtype(weights_dtype)), num_layers, top_k), nullable=False
            )
        )
    if store_probs:
        fields.append(pa.field("probs", _nested(pa.float16(), num_layers, num_experts)))
    if with_pos:
        fields.append(pa.field("word_index", pa.int32()))
        fields.append(pa.field("upos", pa.dictionary(pa.int32(), pa.string())))
    if with_phase:
        fields.append(pa.field("phase", pa.dictionary(pa.int32(), pa.string()), nullable=False))
    if store_expert_norms:  # (layers, k) L2 norms of the chosen experts' outputs before weighting
        fields.append(pa.field("expert_norms", _nested(pa.float16(), num_layers, top_k)))
    if lookahead:  # (layers, D, k) int16: the router of MoE layer l + d on layer l's router input
        fields.append(
            pa.field("lookahead", pa.list_(_nested(pa.int16(), lookahead, top_k), num_layers), nullable=False)
        )
    if with_request_id:  # imported traces: the engine's request id, `<id>` or `<id>/<choice index>`
        fields.append(pa.field("request_id", pa.string()))
    return pa.schema(fields)


def lookahead_array(values: np.ndarray) -> pa.Array:
    """(tokens, layers, D, k) int16 -> the `lookahead` column (lists over layers, of d, of k)."""
    n, layers, depth, k = values.shape
    inner = nested_array(np.ascontiguousarray(values, np.int16).reshape(n * layers, depth, k), pa.int16())
    return pa.FixedSizeListArray.from_arrays(inner, layers)


def lookahead_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Inverse of `lookahead_array`: (tokens, layers, D, k) int16."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    layers, depth = column.type.list_size, column.type.value_type.list_size
    k = column.type.value_type.value_type.list_size
    values = column.flatten().flatten().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), layers, depth, k)


def phase_array(codes: np.ndarray) -> pa.DictionaryArray:
    """(tokens,) codes into PHASES -> the dictionary column `phase`."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(codes, np.int32), pa.int32()), pa.array(PHASES, pa.string())
    )


def nested_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(tokens, layers, width) numpy -> FixedSizeList<FixedSizeList<value>> without a Python loop."""
    assert values.ndim == 3, values.shape
    n, layers, width = values.shape
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=value_type)
    inner = pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.FixedSizeListArray.from_arrays(inner, layers)


def nested_to_numpy(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """Inverse of `nested_array`: a fixed-size-list column -> numpy (tokens, layers, width)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    layers = column.type.list_size
    values = column.flatten().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), layers, width)
