"""Atomic, resumable writing of trace shards and the manifest.

A trace directory holds `manifest.json`, `vocab.json` and `shards/part-{i:05d}.parquet`.
Every file is written under a temporary name and renamed (`routelens.atomic`), so a killed run
leaves only whole files behind, with the user's umask. Each shard records in its Parquet
metadata the document cursor after it. Shards may be written by several processes at once
(Ray actors) and finish in any order, so the resume point is the set of shards on disk
(`existing_shards`), each checked against the plan before it is skipped: re-running the same
command resumes with no token lost or duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from routelens.atomic import atomic_path, write_json
from routelens.errors import RoutelensError
from routelens.store.schema import FORMAT_NAME, FORMAT_VERSION, MANIFEST, SHARD_DIR, VOCAB

SHARD_META_KEY = b"routelens.shard"
_OWN_ENTRIES = {MANIFEST, VOCAB, SHARD_DIR}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_shard(shard_dir: str | os.PathLike, index: int, table: pa.Table, meta: dict) -> int:
    """Write shard `index` as `part-{index:05d}.parquet` atomically; returns its size in bytes.

    The one shard writer, used in this process and by Ray actors. Its temporary name is unique
    per attempt (a retried Ray task may race a dying one for the same shard), and the rename
    makes the shard appear whole or not at all.
    """
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "index": int(index), **meta}
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[SHARD_META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_meta)
    final = Path(shard_dir) / shard_name(index)
    with atomic_path(final) as tmp:  # `.part-i.parquet.routelens-PID-*.tmp`: the writer clears `.*.tmp` on start
        pq.write_table(table, tmp, compression="zstd", use_dictionary=["domain", "upos", "phase"])
    return final.stat().st_size


def existing_shards(shard_dir: str | os.PathLike) -> dict[int, dict]:
    """{index: shard metadata} of every complete shard in `shard_dir`, in any order."""
    found = {}
    for path in sorted(Path(shard_dir).glob("part-*.parquet")):
        try:
            meta = pq.read_schema(path).metadata or {}
        except (pa.ArrowException, OSError):
            continue  # damaged (truncated, zeroed): not done, so the resume writes it again

        if SHARD_META_KEY in meta:
            info = json.loads(meta[SHARD_META_KEY])
            found[int(info["index"])] = info
    return found


class TraceWriter:
    """Owns one trace directory while it is being written.

    `identity` is everything that decides the content of the trace (model, corpora, window
    length, ...). A directory whose manifest carries another identity is refused unless
    `overwrite` is set; one with the same identity is resumed.
    """

    def __init__(self, out_dir: str | os.PathLike, identity: dict, *, overwrite: bool = False):
        self.dir = Path(out_dir)
        self.shard_dir = self.dir / SHARD_DIR
        self.identity = identity
        self._prepare(overwrite)

    # -- opening ---------------------------------------------------------------------------
    def _prepare(self, overwrite: bool) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise RoutelensError(f"--out {self.dir} is a file; give a directory path for the trace.")
        entries = set(os.listdir(self.dir)) if self.dir.exists() else set()
        foreign = sorted(e for e in entries - _OWN_ENTRIES if not e.startswith("."))
        manifest_path = self.dir / MANIFEST
        if entries and foreign:
            raise RoutelensError(
                f"--out {self.dir} already holds files that are not a routelens trace ({', '.join(foreign[:3])}); "
                "choose an empty or new directory."
            )
        if manifest_path.exists():
            try:
                previous = json.loads(manifest_path.read_text())
            except json.JSONDecodeError:
                previous = {}
            if previous.get("identity") != self.identity:
                if not overwrite:
                    raise RoutelensError(
                        f"{self.dir} holds a trace of another model, corpus or settings; "
                        "pass --overwrite to replace it, or choose another --out."
                    )
                self._clear()
        elif (self.shard_dir.exists() and any(self.shard_dir.iterdir())) or (self.dir / VOCAB).exists():
            # Shards without a manifest: not ours to extend, since their identity is unknown.
            if not overwrite:
                raise RoutelensError(
                    f"{self.dir} holds trace shards but no manifest.json; pass --overwrite to replace them."
                )
            self._clear()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob(".*.tmp"):
            stale.unlink()

    def _clear(self) -> None:
        """Remove what routelens wrote (shards, their temporaries, manifest, vocab) and nothing else:
        `--overwrite` refuses a shard folder that also holds someone's own files."""
        if self.shard_dir.is_dir():
            theirs = sorted(
                p.name
                for p in self.shard_dir.iterdir()
                if not (
                    p.is_file() and (p.name.startswith("part-") and p.suffix == ".parquet" or p.name.endswith(".tmp"))
                )
            )
            if theirs:
                raise RoutelensError(
                    f"{self.shard_dir} holds files routelens did not write ({', '.join(theirs[:3])}); "
                    "move them out before --overwrite, or choose another --out."
                )
            shutil.rmtree(self.shard_dir, ignore_errors=True)
        for name in (MANIFEST, VOCAB):
            (self.dir / name).unlink(missing_ok=True)

    def shard_listing(self) -> list[dict]:
        """Every shard on disk as the manifest lists it (file, rows, bytes): readers check the set
        against it, so a deleted or replaced shard is refused instead of silently read around."""
        return [
            {"file": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "bytes": p.stat().st_size}
            for p in sorted(self.shard_dir.glob("part-*.parquet"))
        ]

    # -- state -----------------------------------------------------------------------------
    def existing_shards(self) -> dict[int, dict]:
        """{index: metadata} of every complete shard on disk, in any order (the resume point)."""
        return existing_shards(self.shard_dir)

    def completed_shards(self) -> list[dict]:
        """Metadata of the complete shards 0..m-1 on disk (the prefix an in-order writer leaves)."""
        found = self.existing_shards()
        done: list[dict] = []
        while len(done) in found:
            done.append(found[len(done)])
        return done

    def previous_manifest(self) -> dict | None:
        path = self.dir / MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    # -- writing ---------------------------------------------------------------------------
    def write_shard(self, index: int, table: pa.Table, meta: dict) -> int:
        """Write shard `index` atomically; returns its size in bytes."""
        return write_shard(self.shard_dir, index, table, meta)

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.dir / MANIFEST, {**manifest, "identity": self.identity}, indent=2, newline=True)

    def write_vocab(self, tokens: list[str]) -> None:
        write_json(self.dir / VOCAB, {"tokens": tokens}, indent=2, newline=True)


def new_manifest(
    *,
    model: dict,
    family: str,
    routing_rule: str,
    moe_layers: list[int],
    num_experts: int,
    top_k: int,
    corpora: list[dict],
    tokenizer: dict,
    seq_len: int,
    extra: dict | None = None,
) -> dict:
    """The manifest's fixed keys (docs/trace-format.md); totals are filled in at the end."""
    from datetime import UTC, datetime

    from routelens.version import VERSION as __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "routelens_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": False,
        "model": model,
        "family": family,
        "routing_rule": routing_rule,
        "moe_layers": list(moe_layers),
        "num_experts": int(num_experts),
        "top_k": int(top_k),
        "tokenizer": tokenizer,
        "corpora": corpora,
        "seq_len": int(seq_len),
        **(extra or {}),
    }
