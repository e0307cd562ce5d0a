"""`trace()`: the public entry point of the trace stage, from a model and corpora to a trace.

    check inputs --> load (the model, or on Ray only its structure) --> describe the routing
      --> open the output (resume, refuse or overwrite) --> manifest + vocab
      --> the local backend or the Ray backend --> manifest with totals, marked complete

Torch, transformers and Ray are imported only once a trace is really run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

from routelens.config import build_config
from routelens.corpus import CorpusSpec
from routelens.errors import RoutelensError
from routelens.store.reader import Trace, open_trace
from routelens.store.writer import TraceWriter, new_manifest
from routelens.trace.config import SEQ_LEN, TraceConfig
from routelens.trace.plan import corpus_identity, parse_specs, preflight


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

    `out` is locked for the run (`routelens.lock`): two runs into one trace directory would mix their
    shards (or one `overwrite` replace the other's trace while both report success), so the second is
    refused in one line naming the first's PID.
    """
    from routelens.lock import output_lock

    config = build_config(TraceConfig, config, overrides)  # an unknown override is refused by name
    with output_lock(out, what="trace"):
        return _trace(model, corpora, out, config)


def _trace(
    model: str | os.PathLike,
    corpora: Sequence[str | CorpusSpec] | Mapping[str, str],
    out: str | os.PathLike,
    config: TraceConfig,
) -> Trace:
    """The body of `trace`, run with `out` locked."""
    from routelens.capture import describe_model
    from routelens.models.loading import config_sha256, load_model, load_skeleton, vocab_strings
    from routelens.models.overrides import unpadded_reason

    model = model_identity(model)  # loaded by its normal name, so the config's _name_or_path (hashed) agrees too
    specs = parse_specs(corpora)
    preflight(specs)
    if config.ray is not None:  # the driver needs the model's structure only: no weights in its memory
        from routelens.trace.ray_backend import require_ray

        require_ray()
        hf_model, tokenizer = load_skeleton(model, config)
    else:
        hf_model, tokenizer = load_model(model, config)
    routing = describe_model(hf_model)
    config = fit_seq_len(hf_model.config, config)  # from here on seq_len is the window actually used
    identity = {
        "model": model,
        "config_sha256": config_sha256(hf_model.config),
        "corpora": [corpus_identity(s) for s in specs],
        **config.identity(),
    }
    verified = False
    if config.verify and config.ray is None:  # on Ray the actors check their first batch (ray_backend)
        from routelens.trace.checks import verify_first_batch

        verified = verify_first_batch(hf_model, tokenizer, routing, config, specs)
    writer = TraceWriter(out, identity, overwrite=config.overwrite)
    previous = writer.previous_manifest()
    if previous and previous.get("complete") and previous.get("identity") == identity and shards_intact(out):
        return open_trace(out)  # a trace with a shard deleted or damaged goes on: the missing shards are rewritten
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
        extra={
            "batch_size": config.batch_size,
            "dtype": str(hf_model.dtype).removeprefix("torch."),
            "weights_dtype": config.weights_dtype,
            "store_probs": config.store_probs,
            "store_expert_norms": config.store_expert_norms,
            "lookahead": config.lookahead,
            "max_tokens": config.max_tokens,
            "tagger": config.tagger,
            **_routing_layout(routing),
            "verified": verified or (config.verify and config.ray is not None),
            "transformers": _transformers(),
            "unpadded": unpadded_reason(routing.family) is not None,
        },
    )
    if config.generate:  # generation traces say how their decode rows were drawn
        base["generation"] = {
            "generate": config.generate,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
            "stops_at_eos": False,
        }
    writer.write_manifest(base)
    writer.write_vocab(vocab_strings(tokenizer))
    if config.ray is not None:
        from routelens.trace.ray_backend import trace_on_ray

        try:
            totals = trace_on_ray(str(model), routing, config, specs, writer)
        except RoutelensError:
            if not previous and not writer.existing_shards():  # refused before any shard: leave nothing behind
                _remove_new_trace(writer)
            raise
    else:
        from routelens.trace.local import trace_locally

        totals = trace_locally(hf_model, tokenizer, routing, config, specs, writer)
    base.update(complete=True, **totals, shards=writer.shard_listing())
    writer.write_manifest(base)
    return open_trace(out)


def fit_seq_len(hf_config, config: TraceConfig) -> TraceConfig:
    """`config` with the window length actually used: a given --seq-len as is, none given the
    default 512 cut to the model's positions (less --generate, which decodes past the prompt).

    A window longer than `max_position_embeddings` routes tokens at positions the model never saw
    (or indexes past its position table), a trace of nothing real: a given --seq-len beyond it is
    refused, never cut, since the user asked for that length."""
    from routelens.models.families import text_config

    limit = getattr(text_config(hf_config), "max_position_embeddings", None)
    if not (isinstance(limit, int) and limit > 0):
        limit = None  # the model does not say: the window is the user's or the default
    if config.seq_len is None:
        room = SEQ_LEN if limit is None else min(SEQ_LEN, limit - config.generate)
        if room < 1:
            raise RoutelensError(
                f"--generate {config.generate} leaves no position for a prompt within the model's "
                f"max_position_embeddings {limit}; choose --generate {limit - 1} or less."
            )
        return replace(config, seq_len=room)
    if limit is None:
        return config
    if config.seq_len > limit:
        raise RoutelensError(
            f"--seq-len {config.seq_len} is beyond the model's max_position_embeddings {limit}; "
            f"choose --seq-len {limit} or less."
        )
    if config.generate and config.seq_len + config.generate > limit:  # decoding continues past the prompt's positions
        raise RoutelensError(
            f"--seq-len {config.seq_len} + --generate {config.generate} = {config.seq_len + config.generate} "
            f"positions is beyond the model's max_position_embeddings {limit}; keep their sum at {limit} or less."
        )
    return config


def model_identity(model: str | os.PathLike) -> str:
    """The model's name in the trace identity: `./model`, `model/` and `model` are one model."""
    text = str(model)
    return os.path.normpath(text) if os.path.exists(text) else text


def shards_intact(out: str | os.PathLike) -> bool:
    """Whether the complete trace at `out` has every shard its manifest lists, as listed."""
    from routelens.errors import RoutelensError

    try:
        open_trace(out).check_shards()
    except RoutelensError:
        return False
    return True


def _remove_new_trace(writer: TraceWriter) -> None:
    """Remove the manifest, vocabulary and empty shard folder a new trace wrote before it was refused."""
    from routelens.store.writer import MANIFEST, VOCAB

    for name in (MANIFEST, VOCAB):
        (writer.dir / name).unlink(missing_ok=True)
    for folder in (writer.shard_dir,):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def _transformers() -> str:
    import transformers

    return transformers.__version__


def _routing_layout(routing) -> dict:
    """The routing shapes the capture reports beyond E and k (per-layer k, zero-computation
    experts, hash-routed layers; docs/trace-format.md), for the manifest as they are."""
    keys = ("top_k_per_layer", "num_zero_experts", "hash_routed_layers")
    return {key: getattr(routing, key) for key in keys if hasattr(routing, key)}
