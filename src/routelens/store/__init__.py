"""The on-disk routing trace: a directory of Parquet shards plus `manifest.json`.

See docs/trace-format.md for the contract that outside tools rely on.
"""

from routelens.store.reader import Trace, TraceChunk, meta_num_experts, open_trace
from routelens.store.schema import FORMAT_NAME, FORMAT_VERSION, trace_schema
from routelens.store.writer import TraceWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Trace",
    "TraceChunk",
    "TraceWriter",
    "meta_num_experts",
    "open_trace",
    "trace_schema",
]
