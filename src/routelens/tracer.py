"""Run a MoE language model over corpora and record its routing into a trace directory.

The pipeline, streamed so that memory does not grow with the corpus:

    documents --tokenize--> windows of <= seq_len tokens --batch--> model forward (hooks record
    the router's decision) --> rows of the non-padding tokens --> shard buffer --> Parquet shard

Documents longer than `seq_len` are cut into consecutive windows that the model sees
separately: a token's context is its own window only (no overlap, no carried state), while
`position` keeps counting across windows. Shards hold whole documents and are written in a
background thread while the model computes the next one; each is atomic and records the
document cursor after it, so an interrupted run resumes exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from routelens.corpus import CorpusKind, CorpusSpec, Document, iter_documents, parse_corpus_spec
from routelens.errors import RoutelensError
from routelens.store.reader import UPOS_CODE, Trace, open_trace
from routelens.store.schema import expert_id_numpy, expert_id_type, nested_array, trace_schema
from routelens.store.writer import TraceWriter, new_manifest

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TraceConfig:
    seq_len: int = 512  # window length in tokens; longer documents are cut into windows
    batch_size: int = 8  # windows per forward pass
    max_tokens: int | None = None  # per corpus; the last document is cut to fit
    store_probs: bool = False  # also store the full router distribution (L x E float16 per token)
    device: str = "cpu"
    dtype: str = "auto"  # model dtype: auto (as saved) | float32 | bfloat16 | float16
    weights_dtype: str = "float16"  # storage of combination weights: float16 | float32
    shard_tokens: int = 1 << 18  # target rows per shard (shards hold whole documents)
    tagger: str | None = None  # "spacy[:MODEL]": tag raw text with UPOS (needs routelens[pos])
    overwrite: bool = False
    progress: bool = True
    ray: str | None = None  # None: this process; "local": a Ray instance of its own; "auto"/ADDRESS: a cluster
    ray_workers: int | None = None  # model actors; default one per GPU of the cluster, else one per spare CPU
    ray_gpus_per_worker: float | None = None  # default 1 when the cluster has GPUs, else 0 (CPU actors)

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "shard_tokens"):
            if getattr(self, name) < 1:
                raise RoutelensError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)}).")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise RoutelensError(f"--max-tokens must be at least 1 (got {self.max_tokens}).")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise RoutelensError(f"--dtype {self.dtype!r} is unknown; use auto, {', '.join(DTYPES)}.")
        if self.weights_dtype not in ("float16", "float32"):
            raise RoutelensError(f"weights dtype {self.weights_dtype!r} is unknown; use float16 or float32.")
        if self.device.startswith("cuda") and self.ray is None and not torch.cuda.is_available():
            raise RoutelensError(f"--device {self.device}: no CUDA device is available here; use --device cpu.")
        if self.tagger is not None and not self.tagger.startswith("spacy"):
            raise RoutelensError(f"--tagger {self.tagger!r} is unknown; use spacy or spacy:MODEL.")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise RoutelensError(f"--ray-workers must be at least 1 (got {self.ray_workers}).")
        if self.ray_gpus_per_worker is not None and self.ray_gpus_per_worker < 0:
            raise RoutelensError(f"--ray-gpus-per-worker must be >= 0 (got {self.ray_gpus_per_worker}).")


@dataclass
class _Window:
    """Up to seq_len consecutive tokens of one document, with where its rows go in the shard."""

    ids: np.ndarray  # (t,) int32
    row: int  # offset of its first row in the shard
    doc_id: int
    domain: int
    start: int  # position of its first token within the document
    word_index: np.ndarray | None = None  # (t,) int32
    upos: np.ndarray | None = None  # (t,) int32 codes


@dataclass
class _Shard:
    index: int
    windows: list[_Window] = field(default_factory=list)
    rows: int = 0
    next_doc: int = 0


def trace(
    model: str | os.PathLike,
    corpora: Sequence[str | CorpusSpec] | Mapping[str, str],
    out: str | os.PathLike,
    config: TraceConfig | None = None,
    **overrides,
) -> Trace:
    """Trace `model` (a local directory or hub id) over `corpora` into the directory `out`.

    `corpora` is a list of `NAME=PATH` specs or a mapping {name: path}. Keyword overrides
    set TraceConfig fields. Returns the opened trace. Re-running the same call after an
    interruption resumes it; a finished trace is returned as is.
    """
    config = TraceConfig(**{**(asdict(config) if config else {}), **overrides})
    specs = _parse_specs(corpora)
    _preflight(specs)
    if config.ray is not None:  # the driver needs the model's structure only: no weights in its memory
        from routelens.scale.ray_trace import load_skeleton

        hf_model, tokenizer = load_skeleton(model, config)
    else:
        hf_model, tokenizer = load_model(model, config)
    from routelens.capture import describe_model

    routing = describe_model(hf_model)
    identity = {
        "model": str(model),
        "config_sha256": config_sha256(hf_model.config),
        "corpora": [_corpus_identity(s) for s in specs],
        **{k: v for k, v in asdict(config).items() if k not in ("overwrite", "progress", "device") and not k.startswith("ray")},
    }
    writer = TraceWriter(out, identity, overwrite=config.overwrite)
    previous = writer.previous_manifest()
    if previous and previous.get("complete") and previous.get("identity") == identity:
        return open_trace(out)
    base = new_manifest(
        model={
            "name_or_path": str(model),
            "architecture": type(hf_model).__name__,
            "model_type": hf_model.config.model_type,
            "config_sha256": identity["config_sha256"],
            "num_hidden_layers": getattr(hf_model.config, "num_hidden_layers", None),
            "hidden_size": getattr(hf_model.config, "hidden_size", None),
            "expert_params": routing.expert_params,
        },
        family=routing.family,
        routing_rule=routing.rule,
        moe_layers=routing.moe_layers,
        num_experts=routing.num_experts,
        top_k=routing.top_k,
        corpora=[{"name": s.name, "source": s.source, "kind": str(s.kind)} for s in specs],
        tokenizer={"name": getattr(tokenizer, "name_or_path", None), "vocab_size": len(tokenizer)},
        seq_len=config.seq_len,
        extra={"batch_size": config.batch_size, "dtype": str(hf_model.dtype).removeprefix("torch."),
               "weights_dtype": config.weights_dtype, "store_probs": config.store_probs,
               "max_tokens": config.max_tokens, "tagger": config.tagger},
    )  # fmt: skip
    writer.write_manifest(base)
    writer.write_vocab(vocab_strings(tokenizer))
    if config.ray is not None:  # same plan and compute on a pool of Ray actors (routelens.scale)
        from routelens.scale.ray_trace import trace_on_ray

        totals = trace_on_ray(str(model), routing, config, specs, writer)
    else:
        runner = _Runner(hf_model, tokenizer, routing, config, specs, writer)
        totals = runner.run()
    base.update(complete=True, totals=totals["totals"], corpora=totals["corpora"])
    writer.write_manifest(base)
    return open_trace(out)


# -- loading -----------------------------------------------------------------------------------
def load_model(model: str | os.PathLike, config: TraceConfig):
    """AutoModelForCausalLM + AutoTokenizer from a local directory or hub id, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(model)
    if (Path(name).exists() or name.startswith((".", "/", "~"))) and not (Path(name) / "config.json").is_file():
        raise RoutelensError(f"no model at {name} (no config.json); give a model directory or a hub id.")
    from transformers.utils import logging as hf_logging

    kwargs = {} if config.dtype == "auto" else {"dtype": DTYPES[config.dtype]}
    # transformers' own loading bars would interleave with ours and with one-line errors.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        hf_model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RoutelensError(f"could not load model {name!r}: {first}") from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return hf_model.to(config.device).eval(), tokenizer


def config_sha256(model_config) -> str:
    return hashlib.sha256(model_config.to_json_string(use_diff=False).encode()).hexdigest()


def vocab_strings(tokenizer) -> list[str]:
    """Display text of every token id (what the token view shows)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in tokens]


def _parse_specs(corpora) -> list[CorpusSpec]:
    if isinstance(corpora, Mapping):
        corpora = [f"{k}={v}" for k, v in corpora.items()]
    specs = [c if isinstance(c, CorpusSpec) else parse_corpus_spec(c) for c in corpora]
    if not specs:
        raise RoutelensError("no corpus given; add --corpus NAME=PATH.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise RoutelensError(f"corpus names must be unique (got {', '.join(names)}); rename one NAME=.")
    return specs


def _preflight(specs: list[CorpusSpec]) -> None:
    """Fail before writing anything: empty corpora, and malformed CoNLL-U anywhere in the file."""
    for spec in specs:
        docs = iter_documents(spec)
        if spec.kind is CorpusKind.CONLLU:
            found = sum(1 for _ in docs)  # parses the whole file: errors surface now, not mid-trace
        else:
            found = next(docs, None) is not None
        if not found:
            raise RoutelensError(f"corpus {spec} holds no text; check the file or drop it.")


def _corpus_identity(spec: CorpusSpec) -> dict:
    ident = {"spec": str(spec)}
    path = Path(spec.source)
    if spec.kind is not CorpusKind.HF and path.is_file():
        ident["bytes"] = path.stat().st_size
    return ident


# -- the run -----------------------------------------------------------------------------------
class _Runner:
    def __init__(self, model, tokenizer, routing, config: TraceConfig, specs, writer: TraceWriter):
        self.model, self.tokenizer, self.routing, self.config = model, tokenizer, routing, config
        self.specs, self.writer = specs, writer
        self.L, self.E, self.k = len(routing.moe_layers), routing.num_experts, routing.top_k
        self.with_pos = any(s.kind is CorpusKind.CONLLU for s in specs) or config.tagger is not None
        self.schema = trace_schema(
            self.L, self.E, self.k,
            weights_dtype=config.weights_dtype, store_probs=config.store_probs, with_pos=self.with_pos,
        )  # fmt: skip
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.domains = pa.array([s.name for s in specs], pa.string())
        self.upos_code = UPOS_CODE

    def run(self) -> dict:
        from routelens.progress import progress_bar
        from routelens.store.reader import UPOS_CODE

        self.upos_code = UPOS_CODE
        done = self.writer.completed_shards()
        corpora = [{"name": s.name, "source": s.source, "kind": str(s.kind), "documents": 0, "tokens": 0} for s in self.specs]
        totals = {"tokens": 0, "documents": 0, "shards": 0, "bytes": 0}
        budget = self.config.max_tokens * len(self.specs) if self.config.max_tokens else None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routelens-writer")
        pending: list[Future] = []
        with progress_bar(not self.config.progress) as bar:
            task = bar.add_task("tracing", total=budget, status="")
            for shard in self._shards(corpora):
                if shard.index < len(done):
                    if done[shard.index].get("next_doc") != shard.next_doc:
                        raise RoutelensError(
                            f"{self.writer.dir} was written with other shard boundaries; pass --overwrite to start again."
                        )
                    totals["bytes"] += (self.writer.shard_dir / f"part-{shard.index:05d}.parquet").stat().st_size
                else:
                    table = self._compute(shard)
                    meta = {"next_doc": shard.next_doc, "rows": shard.rows}
                    pending.append(pool.submit(self.writer.write_shard, shard.index, table, meta))
                    while pending and pending[0].done():
                        totals["bytes"] += pending.pop(0).result()
                totals["shards"] += 1
                totals["tokens"] += shard.rows
                bar.update(task, advance=shard.rows, status=f"{totals['tokens']:,} tokens")
            for fut in pending:
                totals["bytes"] += fut.result()
        pool.shutdown()
        totals["documents"] = sum(c["documents"] for c in corpora)
        if totals["tokens"] == 0:
            raise RoutelensError("the corpora produced no tokens; check the files.")
        totals["bytes_per_token_layer"] = totals["bytes"] / (totals["tokens"] * self.L)
        return {"totals": totals, "corpora": corpora}

    # Documents -> windows -> shards, deterministically from the inputs alone.
    def _shards(self, corpora: list[dict]) -> Iterator[_Shard]:
        shard = _Shard(0)
        doc_id = 0
        for d, spec in enumerate(self.specs):
            remaining = self.config.max_tokens
            for doc, ids, words, upos in self._tokenized(spec):
                if remaining is not None:
                    ids, words, upos = ids[:remaining], _cut(words, remaining), _cut(upos, remaining)
                    remaining -= len(ids)
                if len(ids) == 0:
                    continue
                for start in range(0, len(ids), self.config.seq_len):
                    stop = start + self.config.seq_len
                    shard.windows.append(
                        _Window(ids[start:stop], shard.rows, doc_id, d, start, _cut(words, stop, start), _cut(upos, stop, start))
                    )
                    shard.rows += len(ids[start:stop])
                corpora[d]["documents"] += 1
                corpora[d]["tokens"] += len(ids)
                doc_id += 1
                if shard.rows >= self.config.shard_tokens:
                    shard.next_doc = doc_id
                    yield shard
                    shard = _Shard(shard.index + 1)
                if remaining == 0:
                    break
        if shard.windows:
            shard.next_doc = doc_id
            yield shard

    def _tokenized(self, spec: CorpusSpec, group: int = 256):
        """(doc, ids, word_index, upos) per document; tokenizes in groups for the fast tokenizer."""
        docs = iter_documents(spec)
        if self.config.tagger is not None and spec.kind is not CorpusKind.CONLLU:
            from routelens.corpus.tagger import tag_documents

            model = self.config.tagger.partition(":")[2] or "en_core_web_sm"
            docs = tag_documents(docs, model=model)
        for batch in _batched(docs, group):
            with_words = any(doc.words is not None for doc in batch)
            enc = self.tokenizer(
                [doc.text for doc in batch], add_special_tokens=True, return_offsets_mapping=with_words,
                return_attention_mask=False,
            )  # fmt: skip
            for i, doc in enumerate(batch):
                ids = np.asarray(enc["input_ids"][i], dtype=np.int32)
                if doc.words is None:
                    yield doc, ids, None, None
                    continue
                words, upos = self._align_words(doc, enc["offset_mapping"][i])
                yield doc, ids, words, upos

    def _align_words(self, doc: Document, offsets) -> tuple[np.ndarray, np.ndarray]:
        """Each token gets the word that holds its first non-space character (-1: none, e.g. BOS)."""
        owner = np.full(len(doc.text) + 1, -1, dtype=np.int32)
        for w, word in enumerate(doc.words):
            owner[word.start : word.end] = w
        tags = np.array([self.upos_code.get(w.upos, -1) for w in doc.words] + [-1], dtype=np.int32)
        word_index = np.full(len(offsets), -1, dtype=np.int32)
        for t, (s, e) in enumerate(offsets):
            for c in range(s, e):
                if not doc.text[c].isspace():
                    word_index[t] = owner[c]
                    break
        return word_index, tags[word_index]  # tags[-1] is the trailing -1

    @torch.inference_mode()
    def _compute(self, shard: _Shard) -> pa.Table:
        from routelens.capture import RoutingRecorder

        n, L, k, E = shard.rows, self.L, self.k, self.E
        experts = np.empty((n, L, k), dtype=expert_id_numpy(E))  # (tokens, layers, k)
        weights = np.empty((n, L, k), dtype=np.dtype(self.config.weights_dtype))
        probs = np.empty((n, L, E), dtype=np.float16) if self.config.store_probs else None
        # Longest windows first, so batches hold windows of similar length and little padding.
        order = sorted(range(len(shard.windows)), key=lambda i: -len(shard.windows[i].ids))
        body = getattr(self.model, self.model.base_model_prefix, self.model)  # the LM head is not needed
        with RoutingRecorder(self.model, self.routing, store_probs=self.config.store_probs) as recorder:
            for b in range(0, len(order), self.config.batch_size):
                batch = [shard.windows[i] for i in order[b : b + self.config.batch_size]]
                T = len(batch[0].ids)
                ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), T), dtype=torch.long)
                for r, w in enumerate(batch):
                    ids[r, : len(w.ids)] = torch.from_numpy(w.ids)
                    mask[r, : len(w.ids)] = 1
                body(input_ids=ids.to(self.config.device), attention_mask=mask.to(self.config.device), use_cache=False)
                got = recorder.take()
                keep = mask.reshape(-1).bool().to(got.experts.device)
                # (L, B*T, k) -> (real tokens, L, k), in batch-row order
                e = got.experts[:, keep].permute(1, 0, 2).cpu().numpy()
                wts = got.weights[:, keep].permute(1, 0, 2).float().cpu().numpy()
                p = got.probs[:, keep].permute(1, 0, 2).cpu().numpy() if probs is not None else None
                at = 0
                for w in batch:
                    m = len(w.ids)
                    experts[w.row : w.row + m] = e[at : at + m]
                    weights[w.row : w.row + m] = wts[at : at + m]
                    if probs is not None:
                        probs[w.row : w.row + m] = p[at : at + m]
                    at += m
        return self._table(shard, experts, weights, probs)

    def _table(self, shard: _Shard, experts, weights, probs) -> pa.Table:
        n = shard.rows
        doc_id = np.empty(n, np.int64)
        domain = np.empty(n, np.int32)
        position = np.empty(n, np.int32)
        token_id = np.empty(n, np.int32)
        word_index = np.full(n, -1, np.int32)
        upos = np.full(n, -1, np.int32)
        for w in shard.windows:
            sl = slice(w.row, w.row + len(w.ids))
            doc_id[sl], domain[sl], token_id[sl] = w.doc_id, w.domain, w.ids
            position[sl] = np.arange(w.start, w.start + len(w.ids))
            if w.word_index is not None:
                word_index[sl], upos[sl] = w.word_index, w.upos
        columns = [
            pa.array(doc_id),
            pa.DictionaryArray.from_arrays(pa.array(domain), self.domains),
            pa.array(position),
            pa.array(token_id),
            nested_array(experts, expert_id_type(self.E)),
            nested_array(weights, pa.from_numpy_dtype(weights.dtype)),
        ]
        if probs is not None:
            columns.append(nested_array(probs, pa.float16()))
        if self.with_pos:
            from routelens.store.reader import UPOS_TAGS

            columns.append(pa.array(word_index, mask=word_index < 0))
            columns.append(pa.DictionaryArray.from_arrays(pa.array(upos, mask=upos < 0), pa.array(UPOS_TAGS)))
        return pa.Table.from_arrays(columns, schema=self.schema)


def _cut(values: np.ndarray | None, stop: int, start: int = 0) -> np.ndarray | None:
    return None if values is None else values[start:stop]


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def summarize(path: str | os.PathLike) -> dict:
    """What `routelens info` shows: tokens per domain, layers, experts, bytes per token-layer."""
    tr = open_trace(path, allow_incomplete=True)
    m = tr.manifest
    shard_bytes = sum(p.stat().st_size for p in tr.shards)
    tokens = tr.num_tokens
    return {
        "path": str(tr.path),
        "complete": bool(m.get("complete")),
        "model": m["model"].get("name_or_path"),
        "architecture": m["model"].get("architecture"),
        "family": m.get("family"),
        "routing_rule": m.get("routing_rule"),
        "moe_layers": tr.layers,
        "num_experts": tr.num_experts,
        "top_k": tr.top_k,
        "tokens": tokens,
        "domains": {c["name"]: c.get("tokens") for c in m["corpora"]},
        "documents": m.get("totals", {}).get("documents"),
        "columns": tr.columns,
        "shards": len(tr.shards),
        "bytes": shard_bytes,
        "bytes_per_token_layer": shard_bytes / max(1, tokens * len(tr.layers)),
        "seq_len": m.get("seq_len"),
    }


def dumps(info: dict) -> str:
    return json.dumps(info, indent=2)
