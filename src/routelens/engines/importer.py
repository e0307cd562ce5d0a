"""`import_engine(engine, file, model, out)`: a serving engine's recorded routing as a routelens trace.

    requests (vllm.py, sglang.py) --rows, checked against the model (model.py)--> shards of whole
    requests --> manifest (format version 2: no `weights` column, rows carry `phase`)

The whole import is built in a temporary folder beside `out` and renamed into place at the end,
so a malformed line anywhere in the file leaves nothing written (and an older trace untouched).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa

from routelens.config import build_config, setting
from routelens.engines.model import EngineModel
from routelens.engines.records import EngineDocument, ImportReport
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace
from routelens.store.schema import expert_id_numpy, expert_id_type, nested_array, phase_array, trace_schema


class Engine(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    SGLANG_RECORDER = "sglang-recorder"


@dataclass
class ImportConfig:
    domain: str | None = setting(
        None, "Domain of the requests that name none (default: the engine's name).", shown_default="the engine"
    )
    shard_tokens: int = setting(1 << 18, "Target rows per shard (shards hold whole requests).")
    overwrite: bool = setting(False, "Replace an existing trace at --out.")
    trust_remote_code: bool = setting(
        False, "Run the model folder's own Python code to read its config (config.json auto_map)."
    )
    strict: bool = setting(
        False, "Refuse the import when the engine's routing shows an anomaly (repeated expert, id out of range, ...)."
    )
    progress: bool = setting(True, "Show a progress bar.")

    def __post_init__(self):
        if self.shard_tokens < 1:
            raise RoutelensError(f"--shard-tokens must be at least 1 (got {self.shard_tokens}).")
        if self.domain is not None and not str(self.domain).strip():
            raise RoutelensError("--domain is empty; give a name such as --domain chat.")


def import_engine(
    engine: str | Engine,
    file: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike,
    out: str | os.PathLike,
    config: ImportConfig | None = None,
    **overrides,
) -> Trace:
    """Read `file` (the engine's output for requests to `model`; for sglang-recorder, every rank's
    .pt files or their folder) into a new trace at `out`."""
    config = build_config(ImportConfig, config, overrides)
    try:
        engine = Engine(engine)
    except ValueError:
        raise RoutelensError(f"engine {engine!r} is unknown; use {', '.join(e.value for e in Engine)}.") from None
    files = [file] if isinstance(file, (str, os.PathLike)) else list(file)
    if not files:
        raise RoutelensError(f"no file given; give the file the {engine} requests were saved to.")
    if engine is not Engine.SGLANG_RECORDER:
        if len(files) != 1:
            raise RoutelensError(
                f"`import {engine}` reads one file; for every rank's recorder dumps use sglang-recorder."
            )
        if not Path(files[0]).is_file():
            raise RoutelensError(f"{files[0]}: no such file; give the file the {engine} requests were saved to.")
    _check_out(out, config)

    def documents(described: EngineModel, report: ImportReport) -> Iterable[EngineDocument]:
        if engine is Engine.VLLM:
            from routelens.engines.vllm import read_vllm

            return read_vllm(files[0], described, report)
        if engine is Engine.SGLANG_RECORDER or Path(files[0]).suffix == ".pt":
            from routelens.engines.recorder import read_recorder

            return read_recorder(files, described, report)
        from routelens.engines.sglang import read_sglang

        return read_sglang(files[0], described, report)

    recorder = engine is Engine.SGLANG_RECORDER or Path(files[0]).suffix == ".pt"
    source = {"engine": engine.value, "file": str(files[0]) if len(files) == 1 else [str(f) for f in files]}
    return _import(documents, model, out, config, source, request_ids=not recorder)


def import_vllm(
    outputs: Iterable,
    *,
    model: str | os.PathLike,
    out: str | os.PathLike,
    domain: str | None = None,
    config: ImportConfig | None = None,
    **overrides,
) -> Trace:
    """vLLM's `RequestOutput` objects (what `LLM.generate` returns with enable_return_routed_experts;
    duck-typed: `prompt_token_ids`, `outputs[i].token_ids`, `outputs[i].routed_experts` ndarray) or
    saved response dicts, as a new trace at `out`."""
    from routelens.engines.vllm import request_outputs

    config = build_config(ImportConfig, config, {**overrides, "domain": domain} if domain else overrides)
    _check_out(out, config)
    source = {"engine": Engine.VLLM.value, "file": "python objects"}
    return _import(lambda m, r: request_outputs(outputs, m, r), model, out, config, source, request_ids=True)


def import_sglang(
    pairs: Iterable,
    *,
    model: str | os.PathLike,
    out: str | os.PathLike,
    domain: str | None = None,
    config: ImportConfig | None = None,
    **overrides,
) -> Trace:
    """SGLang `/generate` responses as (input_ids, response dict) pairs, or dicts of either saved line
    form, as a new trace at `out`."""
    from routelens.engines.sglang import responses

    config = build_config(ImportConfig, config, {**overrides, "domain": domain} if domain else overrides)
    _check_out(out, config)
    source = {"engine": Engine.SGLANG.value, "file": "python objects"}
    return _import(lambda m, r: responses(pairs, m, r), model, out, config, source, request_ids=True)


def _check_out(out, config: ImportConfig) -> None:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not config.overwrite:
        raise RoutelensError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out.")


def _import(documents, model, out, config: ImportConfig, source: dict, *, request_ids: bool) -> Trace:
    from routelens.atomic import atomic_dir
    from routelens.engines.model import engine_model
    from routelens.lock import output_lock

    out = Path(out)
    described = engine_model(model, trust_remote_code=config.trust_remote_code)
    domain = config.domain or source["engine"].split("-")[0]
    report = ImportReport()
    docs = (_with_domain(d, domain) for d in documents(described, report))
    with output_lock(out, what="import"), atomic_dir(out) as tmp:
        write_documents(tmp, docs, described, source=source, config=config, report=report, request_ids=request_ids)
    return open_trace(out)


def _with_domain(doc: EngineDocument, domain: str) -> EngineDocument:
    if not doc.domain:
        doc.domain = domain
    return doc


def write_documents(
    out: Path,
    documents: Iterable[EngineDocument],
    model: EngineModel,
    *,
    source: dict,
    config: ImportConfig,
    report: ImportReport | None = None,
    request_ids: bool = False,
) -> None:
    """Write `documents` as the shards, vocab and manifest of a trace in the (empty) folder `out`."""
    from routelens.progress import progress_bar
    from routelens.store.writer import TraceWriter, new_manifest

    writer = TraceWriter(out, {"import": source, "model": model.model.get("config_sha256")}, overwrite=True)
    domains: list[str] = []
    counts: dict[str, list[int]] = {}  # domain -> [documents, tokens]
    pending: list[EngineDocument] = []
    shard = doc_id = 0
    with progress_bar(not config.progress) as bar:
        task = bar.add_task(f"import {source['engine']}", total=None, status="")
        for doc in documents:
            if doc.domain not in counts:
                domains.append(doc.domain)
                counts[doc.domain] = [0, 0]
            counts[doc.domain][0] += 1
            counts[doc.domain][1] += len(doc)
            pending.append(doc)
            if sum(len(d) for d in pending) >= config.shard_tokens:
                doc_id = _flush(writer, shard, pending, doc_id, domains, model, request_ids)
                shard, pending = shard + 1, []
            bar.advance(task, len(doc))
        if pending:
            doc_id = _flush(writer, shard, pending, doc_id, domains, model, request_ids)
            shard += 1
    report = report or ImportReport()
    if doc_id == 0:
        if report.aborted:
            raise RoutelensError(
                f"{source['file']}: all {report.aborted} requests have routed_experts null (aborted, or the server ran "
                "without --enable-return-routed-experts); serve with it and save complete responses."
            )
        raise RoutelensError(
            f"{source['file']} holds no request; give the file the {source['engine']} requests were saved to."
        )
    found = {name: n for name, n in report.anomalies.items() if n}
    if config.strict and found:
        raise RoutelensError(
            f"{source['file']}: routing anomalies {', '.join(f'{k}={v}' for k, v in found.items())} under --strict; "
            "check the engine's capture (docs/engines.md), or import without --strict to keep them counted."
        )
    total = sum(c[1] for c in counts.values())
    manifest = new_manifest(
        model=model.model,
        family=model.family,
        routing_rule=model.rule,
        moe_layers=model.moe_layers,
        num_experts=model.num_experts,
        top_k=model.top_k,
        corpora=[
            {
                "name": d,
                "source": source["file"],
                "kind": f"{source['engine']} requests",
                "documents": counts[d][0],
                "tokens": counts[d][1],
            }
            for d in domains
        ],
        tokenizer=model.tokenizer,
        seq_len=0,
        extra={
            "imported_from": source,
            "import": report.to_json(),
            "num_zero_experts": model.num_zero_experts,
            "dtype": None,
            "weights_dtype": None,
            "store_probs": False,
        },
    )
    nbytes = sum(p.stat().st_size for p in writer.shard_dir.glob("part-*.parquet"))
    manifest.update(
        complete=True,
        totals={
            "tokens": total,
            "documents": doc_id,
            "shards": shard,
            "bytes": nbytes,
            "bytes_per_token_layer": nbytes / max(1, total * len(model.moe_layers)),
        },
    )
    writer.write_vocab(model.vocab)
    writer.write_manifest(manifest)


def _flush(
    writer,
    index: int,
    docs: list[EngineDocument],
    doc_id: int,
    domains: list[str],
    model: EngineModel,
    request_ids: bool = False,
) -> int:
    """Write `docs` as shard `index`; returns the next document id."""
    lengths = [len(d) for d in docs]
    codes = {name: i for i, name in enumerate(domains)}
    ids = np.repeat(np.arange(doc_id, doc_id + len(docs), dtype=np.int64), lengths)
    E, L, k = model.num_experts, len(model.moe_layers), model.top_k
    span = model.num_ids
    experts = np.concatenate([d.experts for d in docs]).astype(expert_id_numpy(span))  # (rows, layers, k)
    domain = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat([codes[d.domain] for d in docs], lengths).astype(np.int32)), pa.array(domains, pa.string())
    )
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            domain,
            pa.array(np.concatenate([d.position for d in docs]), pa.int32()),
            pa.array(np.concatenate([d.token_id for d in docs]), pa.int32()),
            nested_array(experts, expert_id_type(span)),
            phase_array(np.concatenate([d.phase for d in docs])),
            *([pa.array([d.request_id for d in docs for _ in range(len(d))], pa.string())] if request_ids else []),
        ],
        schema=trace_schema(L, E, k, with_weights=False, with_phase=True, id_span=span, with_request_id=request_ids),
    )
    writer.write_shard(index, table, {"next_doc": doc_id + len(docs), "rows": int(sum(lengths))})
    return doc_id + len(docs)
