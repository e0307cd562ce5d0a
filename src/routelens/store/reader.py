"""Reading a routing trace: `open_trace(path)` -> `Trace`, streamed as numpy `TraceChunk`s.

Analyses and simulators consume chunks of rows in trace order (documents one after another,
positions ascending), so their memory is bounded by the chunk size, not by the trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routelens.corpus.upos import UPOS_CODE, UPOS_TAGS  # noqa: F401 - the corpus readers own the tag set (re-exported)
from routelens.errors import RoutelensError
from routelens.store.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    PHASES,
    READABLE_VERSIONS,
    SHARD_DIR,
    VOCAB,
    lookahead_to_numpy,
    nested_to_numpy,
)

BASE_COLUMNS = ("doc_id", "domain", "position", "token_id", "experts")
READ_ROWS = 1 << 16  # rows decoded from Parquet at a time (see Trace.iter_chunks)
PHASE_CODE = {name: i for i, name in enumerate(PHASES)}


@dataclass
class TraceChunk:
    """A run of consecutive trace rows as numpy arrays (absent columns are None)."""

    doc_id: np.ndarray  # (n,) int64
    domain: np.ndarray  # (n,) int32, codes into Trace.domains
    position: np.ndarray  # (n,) int32, position of the token within its document
    token_id: np.ndarray  # (n,) int32
    experts: np.ndarray  # (n, layers, k) uint8 | uint16, first choice first
    weights: np.ndarray | None = None  # (n, layers, k) float16 | float32
    probs: np.ndarray | None = None  # (n, layers, E) float16
    word_index: np.ndarray | None = None  # (n,) int32, -1 where none
    upos: np.ndarray | None = None  # (n,) int32 codes into UPOS_TAGS, -1 where none
    expert_norms: np.ndarray | None = None  # (n, layers, k) float16, L2 norm of each chosen expert's output
    phase: np.ndarray | None = None  # (n,) int32 codes into PHASES (0 prefill, 1 decode), -1 where none
    request_id: np.ndarray | None = None  # (n,) object: the engine's request id (str) or None, imported traces
    lookahead: np.ndarray | None = (
        None  # (n, layers, D, k) int16: MoE layer l+d's router on layer l's input; -1 past the last
    )

    def __len__(self) -> int:
        return len(self.doc_id)

    def slice(self, start: int, stop: int) -> TraceChunk:
        """Rows start:stop (views, no copy)."""
        return TraceChunk(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop])
                for f in fields(self)
            }
        )

    @classmethod
    def concat(cls, chunks: Sequence[TraceChunk]) -> TraceChunk:
        assert chunks, "concat needs at least one chunk"
        out = {}
        for f in fields(cls):
            parts = [getattr(c, f.name) for c in chunks]
            out[f.name] = None if parts[0] is None else np.concatenate(parts)
        return cls(**out)


class Trace:
    """A trace directory opened for reading; cheap to create (reads only the manifest)."""

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise RoutelensError(
                f"no routelens trace at {self.path} (missing {MANIFEST}); create one with `routelens trace`."
            )
        try:
            self.manifest: dict = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
            raise RoutelensError(f"{manifest_path} is not valid JSON ({why}); re-run `routelens trace`.") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT_NAME:
            raise RoutelensError(
                f"{manifest_path} is not a routelens trace manifest; re-create the trace with `routelens trace`."
            )
        self.format_version = _readable_version(self.manifest.get("format_version", 1), manifest_path)
        if not self.manifest.get("complete") and not allow_incomplete:
            raise RoutelensError(
                f"the trace at {self.path} is incomplete (its run was interrupted); "
                "re-run the same `routelens trace` command to finish it."
            )
        try:
            self.layers: list[int] = [int(x) for x in self.manifest["moe_layers"]]
            self.num_experts: int = int(self.manifest["num_experts"])  # routed experts E, as the manifest says
            self.num_zero_experts: int = int(self.manifest.get("num_zero_experts") or 0)  # Z
            # Zero-computation experts (LongCat-Flash) are recorded as ids E..E+Z-1, so whatever
            # counts ids (bincounts, (L, ids) matrices) is num_ids wide, not num_experts.
            self.num_ids: int = self.num_experts + self.num_zero_experts
            self.top_k: int = int(self.manifest["top_k"])
            self.domains: list[str] = [str(c["name"]) for c in self.manifest["corpora"]]
        except (KeyError, TypeError, ValueError) as exc:
            what = f"key {exc}" if isinstance(exc, KeyError) else f"value ({exc})"
            raise RoutelensError(
                f"{manifest_path} lacks a valid {what} (moe_layers, num_experts, top_k and corpora are "
                "needed); re-create the trace with `routelens trace`."
            ) from None
        self._domain_code = {name: i for i, name in enumerate(self.domains)}
        if self.manifest.get("complete"):
            self.check_shards()

    def check_shards(self) -> None:
        """Refuse in one line a trace whose shards are not the ones its manifest lists (file, rows
        and size): a deleted shard, a shard of another run, or one replaced or truncated since.
        Manifests written before the listing existed have nothing to check."""
        listed = self.manifest.get("shards")
        if not isinstance(listed, list):
            return
        on_disk = {p.name: p for p in self.shards}
        fix = "re-run the same `routelens trace` command to rewrite it"
        try:
            expected = {str(s["file"]): (int(s["rows"]), int(s["bytes"])) for s in listed}
        except (KeyError, TypeError, ValueError):
            raise RoutelensError(
                f"{self.path / MANIFEST} lists its shards without file, rows and bytes; "
                "re-create the trace with `routelens trace`."
            ) from None
        missing = sorted(set(expected) - set(on_disk))
        if missing:
            raise RoutelensError(
                f"the trace at {self.path} lacks {len(missing)} of its {len(expected)} shards "
                f"({', '.join(missing[:3])}); {fix}."
            )
        extra = sorted(set(on_disk) - set(expected))
        if extra:
            raise RoutelensError(
                f"the trace at {self.path} holds shards its manifest does not list ({', '.join(extra[:3])}), "
                "from another run; re-create the trace with `routelens trace ... --overwrite`."
            )
        for name, (_rows, size) in expected.items():
            if on_disk[name].stat().st_size != size:
                raise RoutelensError(
                    f"the trace shard {on_disk[name]} has {on_disk[name].stat().st_size} bytes, not the "
                    f"{size} its manifest lists (damaged or replaced); {fix}."
                )

    def __repr__(self) -> str:
        return (
            f"Trace({str(self.path)!r}, tokens={self.num_tokens}, layers={len(self.layers)}, "
            f"experts={self.num_experts}, zero_experts={self.num_zero_experts}, top_k={self.top_k}, domains={self.domains})"
        )

    @property
    def num_tokens(self) -> int:
        return int(sum(self.shard_rows()))

    @property
    def shards(self) -> list[Path]:
        return sorted((self.path / SHARD_DIR).glob("part-*.parquet"))

    def shard_rows(self) -> list[int]:
        return [self._parquet(p).metadata.num_rows for p in self.shards]

    @cached_property
    def columns(self) -> list[str]:
        return self._parquet(self.shards[0]).schema_arrow.names if self.shards else list(BASE_COLUMNS)

    def _parquet(self, shard: Path) -> pq.ParquetFile:
        """A shard opened for reading; a zero-byte, truncated or corrupt one is refused in one line."""
        try:
            return pq.ParquetFile(shard)
        except (pa.ArrowException, OSError) as exc:
            raise self._damaged(shard, exc) from None

    def _damaged(self, shard: Path, exc: BaseException) -> RoutelensError:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return RoutelensError(
            f"the trace shard {shard} is damaged ({first}); re-create the trace with `routelens trace ... --overwrite`."
        )

    @cached_property
    def vocab(self) -> list[str]:
        """Display strings of the model's tokens, indexed by token id."""
        path = self.path / VOCAB
        if not path.exists():
            return []
        try:
            tokens = json.loads(path.read_text(encoding="utf-8"))["tokens"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            tokens = None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise RoutelensError(
                f'{path} is not a token list ({{"tokens": [strings]}}); delete it (tokens are then '
                "shown by id) or re-create the trace with `routelens trace`."
            )
        return tokens

    def has(self, column: str) -> bool:
        return column in self.columns

    def require(self, column: str, what: str) -> None:
        """Refuse in one line when `what` needs an optional column this trace lacks."""
        if not self.has(column):
            raise RoutelensError(
                f"{what} needs the trace's `{column}` column, which {self.path} lacks{_ABSENT_WHY.get(column, '')}."
            )

    # -- streaming -------------------------------------------------------------------------
    def iter_chunks(self, columns: Sequence[str] | None = None, rows: int = 1 << 20) -> Iterator[TraceChunk]:
        """Yield the trace in order as chunks of at most `rows` rows.

        `columns` chooses optional columns to read (weights, probs, word_index, upos, phase);
        the base columns are always present.
        """
        wanted = list(BASE_COLUMNS) + [c for c in (columns or ()) if c not in BASE_COLUMNS]
        missing = [c for c in wanted if c not in self.columns]
        if missing:
            hint = "".join(_ABSENT_WHY.get(c, "") for c in missing[:1])
            raise RoutelensError(f"the trace at {self.path} has no column {', '.join(missing)}{hint}.")
        # Parquet decodes nested lists with several bytes of level and buffer state per value,
        # and holds it for a whole batch: 1M rows x 32 layers x top-2 with weights take ~1.2 GB
        # of Arrow memory, 64K rows ~0.2 GB (and decode faster). So read small batches and join
        # them into chunks of `rows` rows in numpy (one copy), within each shard as before.
        step = min(rows, READ_ROWS)
        for shard in self.shards:
            pending: list[TraceChunk] = []
            have = 0
            for batch in self._batches(shard, step, wanted):
                pending.append(self._to_chunk(batch))
                have += batch.num_rows
                if have >= rows:
                    whole = pending[0] if len(pending) == 1 else TraceChunk.concat(pending)
                    yield whole.slice(0, rows)
                    pending = [whole.slice(rows, have)] if have > rows else []
                    have -= rows
            if pending:
                yield pending[0] if len(pending) == 1 else TraceChunk.concat(pending)

    def _batches(self, shard: Path, step: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
        batches = self._parquet(shard).iter_batches(batch_size=step, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise self._damaged(shard, exc) from None
            yield batch

    def load(self, columns: Sequence[str] | None = None) -> TraceChunk:
        """The whole trace in memory (fine for small traces; analyses stream instead)."""
        chunks = list(self.iter_chunks(columns))
        if not chunks:
            raise RoutelensError(f"the trace at {self.path} holds no tokens.")
        return TraceChunk.concat(chunks)

    def _to_chunk(self, batch: pa.RecordBatch) -> TraceChunk:
        col = batch.column
        names = batch.schema.names
        k, E = self.top_k, self.num_experts  # router probabilities cover the routed experts
        out = TraceChunk(
            doc_id=col("doc_id").to_numpy(),
            domain=_decode_dictionary(col("domain"), self._domain_code),
            position=col("position").to_numpy(),
            token_id=col("token_id").to_numpy(),
            experts=nested_to_numpy(col("experts"), k),
        )
        if "weights" in names:
            out.weights = nested_to_numpy(col("weights"), k)
        if "probs" in names:
            out.probs = nested_to_numpy(col("probs"), E)
        if "word_index" in names:
            out.word_index = col("word_index").fill_null(-1).to_numpy()
        if "upos" in names:
            out.upos = _decode_dictionary(col("upos"), UPOS_CODE)
        if "expert_norms" in names:
            out.expert_norms = nested_to_numpy(col("expert_norms"), k)
        if "phase" in names:
            out.phase = _decode_dictionary(col("phase"), PHASE_CODE)
        if "lookahead" in names:
            out.lookahead = lookahead_to_numpy(col("lookahead"))
        if "request_id" in names:
            out.request_id = np.asarray(col("request_id").to_pylist(), dtype=object)
        return out


# Why an optional column may be absent, and how to get it (appended to the one-line refusals).
_ABSENT_WHY = {
    "probs": " (trace with --store-probs)",
    "weights": " (traces imported from serving engines record experts only; trace the model with `routelens trace` for weights)",
    "phase": " (only imported and generation traces mark prefill and decode rows)",
    "request_id": " (only traces imported from vLLM or SGLang responses name their requests)",
    "lookahead": " (trace with --lookahead D)",
}


def meta_num_experts(meta: dict, trace: Trace):
    """The routed experts E that a result's `meta` names, read in today's vocabulary. Results
    written before `num_ids` existed (CHANGELOG.md, "One vocabulary") put E + Z under `num_experts`,
    as `Trace.num_experts` then counted zero-computation experts too; such a file is read as E + Z
    less the trace's Z, so it is still accepted for its own trace. None when the key is absent."""
    if not isinstance(meta, dict) or "num_experts" not in meta:
        return None
    value = meta["num_experts"]
    if "num_ids" not in meta and isinstance(value, int) and not isinstance(value, bool):
        return value - trace.num_zero_experts
    return value


def _readable_version(version, manifest_path: Path) -> int:
    """The manifest's format version, refused in one line when this release cannot read it."""
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        fix = "upgrade routelens to read it" if newer else "re-create the trace with this routelens"
        raise RoutelensError(
            f"{manifest_path} has format_version {version!r}; this routelens reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: {fix}."
        )
    return version


def _decode_dictionary(array: pa.Array, codes: dict[str, int]) -> np.ndarray:
    """Dictionary-encoded strings -> int32 codes of a fixed global table (-1 for null/unknown)."""
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    lookup = np.array([codes.get(s, -1) for s in array.dictionary.to_pylist()] + [-1], dtype=np.int32)
    idx = array.indices.fill_null(len(lookup) - 1).to_numpy().astype(np.int64, copy=False)
    return lookup[idx]


def open_trace(path: str | Path, *, allow_incomplete: bool = False) -> Trace:
    """Open the trace directory at `path` for reading."""
    return Trace(path, allow_incomplete=allow_incomplete)
