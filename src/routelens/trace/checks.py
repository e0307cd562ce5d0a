"""The trace checks itself: before anything is written, the first batch of the user's own corpus
runs through the user's own model under the verifier (`routelens.capture.verify`), on the
installed transformers. A recording that differs from what the model computes is refused in one
line naming the family, the layer, the transformers version and the fix."""

from __future__ import annotations

from dataclasses import replace

from routelens.corpus import CorpusSpec
from routelens.trace.compute import ShardComputer
from routelens.trace.config import TraceConfig
from routelens.trace.plan import Planner, Shard


def first_shard(tokenizer, config: TraceConfig, specs: list[CorpusSpec]) -> Shard | None:
    """A first shard of the corpus holding one batch's worth of tokens (batch_size windows of
    seq_len), not the trace's first shard (`shard_tokens`): only the first documents are read.
    None for an empty corpus."""
    small = replace(config, shard_tokens=min(config.shard_tokens, config.window() * config.batch_size))
    shard = next(iter(Planner(tokenizer, small, specs).shards()), None)
    return shard if shard is not None and shard.windows else None


def verify_first_batch(model, tokenizer, routing, config: TraceConfig, specs: list[CorpusSpec]) -> bool:
    """Check the recording of the trace's first batch, batched as the trace batches it; True when
    checked (False: empty corpus). Raises RoutelensError on a mismatch."""
    shard = first_shard(tokenizer, config, specs)
    if shard is None:
        return False
    ShardComputer(model, tokenizer, routing, config, specs).verify_first(shard)
    return True
