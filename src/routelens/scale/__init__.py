"""Scale out: tracing on a Ray cluster (`ray_trace`), with shard files that several processes
write at once (`shards`). Ray is optional (`pip install 'routelens[ray]'`) and imported lazily.

Analyses and simulators stream over traces with `Trace.iter_chunks`; `docs/scaling.md` says how
to run on a multi-GPU node or a cluster and what memory the analyses need.
"""

from routelens.scale.shards import existing_shards, write_shard_atomic

__all__ = ["existing_shards", "write_shard_atomic"]
