"""The trace checks itself: before anything is written, the first batch of the user's own corpus
runs through the user's own model under the verifier (`routelens.capture.verify`), on the
installed transformers. A recording that differs from what the model computes is refused in one
line naming the family, the layer, the transformers version and the fix."""

from __future__ import annotations

import torch

from routelens.corpus import CorpusSpec
from routelens.trace.compute import model_body, right_padded
from routelens.trace.config import TraceConfig
from routelens.trace.loading import input_device
from routelens.trace.plan import Planner, batch_rows


def first_batch(tokenizer, config: TraceConfig, specs: list[CorpusSpec], *, equal_lengths: bool):
    """(ids, mask) of a first forward pass over the corpus, shaped as the trace's (batch_size windows
    of seq_len, longest first), or None for an empty corpus. Only the first documents are read: a
    shard of one batch's tokens, not the trace's first shard (`shard_tokens`)."""
    from dataclasses import replace

    small = replace(config, shard_tokens=min(config.shard_tokens, config.seq_len * config.batch_size))
    shard = next(iter(Planner(tokenizer, small, specs).shards()), None)
    if shard is None or not shard.windows:
        return None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows = batch_rows(shard.windows, config.batch_size, equal_lengths=equal_lengths)[0]
    return right_padded([shard.windows[i] for i in rows], pad_id)


def verify_first_batch(model, tokenizer, routing, config: TraceConfig, specs: list[CorpusSpec]) -> bool:
    """Check the recording of the trace's first batch; True when checked (False: empty corpus)."""
    from routelens.capture.overrides import unpadded_reason
    from routelens.capture.verify import check_routing, refusal

    batch = first_batch(tokenizer, config, specs, equal_lengths=unpadded_reason(routing.family) is not None)
    if batch is None:
        return False
    device = input_device(model, config)
    ids, mask = (t.to(device) for t in batch)
    with torch.inference_mode():
        found = check_routing(model, ids, mask, routing, body=model_body(model))
    if found is not None:
        raise refusal(routing.family, found)
    return True
