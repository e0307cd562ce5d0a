"""Shard files written by several processes at once: atomic writes with unique temporary names,
and the inventory of the shards already on disk in any order (the resume point of a Ray trace).

The single-process writer (`routelens.store.writer`) writes shards strictly in order, so its
resume point is a prefix 0..m-1. Ray actors finish shards out of order, so a resumed Ray run
skips every shard present, whatever its index, after checking that it ends at the same document
as the plan says. The file format and names are those of the store: `part-{i:05d}.parquet`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from routelens.store.schema import FORMAT_NAME, FORMAT_VERSION
from routelens.store.writer import SHARD_META_KEY, shard_name


def write_shard_atomic(shard_dir: Path, index: int, table: pa.Table, meta: dict) -> int:
    """Write shard `index` as `part-{index:05d}.parquet`; returns its size in bytes.

    The temporary name is unique per attempt (a retried Ray task may race a dying one for the
    same shard); `os.replace` makes the shard appear whole or not at all.
    """
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "index": int(index), **meta}
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[SHARD_META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_meta)
    final = Path(shard_dir) / shard_name(index)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")  # the writer clears `.*.tmp` on start
    try:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=["domain", "upos"])
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final.stat().st_size


def existing_shards(shard_dir: Path) -> dict[int, dict]:
    """{index: shard metadata} of every complete shard in `shard_dir`, in any order."""
    found = {}
    for path in sorted(Path(shard_dir).glob("part-*.parquet")):
        meta = pq.read_schema(path).metadata or {}
        if SHARD_META_KEY in meta:
            info = json.loads(meta[SHARD_META_KEY])
            found[int(info["index"])] = info
    return found
