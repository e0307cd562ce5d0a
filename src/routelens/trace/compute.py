"""Computing a shard: its windows through the model, the routers' decisions into a Parquet table.

    windows --longest first, batch_size per pass, right-padded--> model body forward (the
    RoutingRecorder hooks record each router's decision) --> rows of the non-padding tokens
    --> (tokens, layers, k) experts and weights --> pa.Table in the trace schema

The same object computes shards in this process and in each Ray actor, so both give the same
batches in the same order. The model may be spread over devices and disk (device_map): the
recorded routing is gathered and moved to the CPU before it becomes rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from routelens.corpus import CorpusSpec
from routelens.corpus.upos import UPOS_TAGS
from routelens.models.loading import input_device
from routelens.models.overrides import unpadded_reason
from routelens.store.schema import expert_id_numpy, expert_id_type, lookahead_array, nested_array, trace_schema
from routelens.trace.config import TraceConfig
from routelens.trace.plan import Shard, Window, batch_rows, records_pos


def model_body(model):
    """The model without its LM head (the routing does not need it)."""
    return getattr(model, model.base_model_prefix, model)


def right_padded(batch: list[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (B, longest), of windows padded on the right."""
    T = max(len(w.ids) for w in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for r, w in enumerate(batch):
        ids[r, : len(w.ids)] = torch.from_numpy(w.ids)
        mask[r, : len(w.ids)] = 1
    return ids, mask


class ShardComputer:
    """Holds a loaded model; `compute(shard)` returns the shard's rows as a table."""

    def __init__(self, model, tokenizer, routing, config: TraceConfig, specs: list[CorpusSpec]):
        self.model, self.routing, self.config = model, routing, config
        self.L, self.E, self.k = len(routing.moe_layers), routing.num_experts, routing.top_k
        self.with_pos = records_pos(specs, config)
        self.schema = trace_schema(
            self.L,
            self.E,
            self.k,
            id_span=routing.id_span,
            weights_dtype=config.weights_dtype,
            store_probs=config.store_probs,
            with_pos=self.with_pos,
            store_expert_norms=config.store_expert_norms,
            lookahead=config.lookahead,
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.domains = pa.array([s.name for s in specs], pa.string())
        self.device = input_device(model, config)
        self.unpadded = unpadded_reason(routing.family) is not None  # padding would move its routing

    def verify_first(self, shard: Shard) -> None:
        """The trace's first-batch check (trace/checks.py) on `shard`'s first batch, where the model
        lives (a Ray actor); raises RoutelensError on a mismatch, before the shard is written."""
        from routelens.capture.verify import check_routing, refusal

        rows = (
            batch_rows(shard.windows, self.config.batch_size, equal_lengths=self.unpadded)[0] if shard.windows else []
        )
        if not rows:
            return
        ids, mask = right_padded([shard.windows[i] for i in rows], self.pad_id)
        with torch.inference_mode():
            found = check_routing(
                self.model, ids.to(self.device), mask.to(self.device), self.routing, body=model_body(self.model)
            )
        if found is not None:
            raise refusal(self.routing.family, found)

    @torch.inference_mode()
    def compute(self, shard: Shard) -> pa.Table:
        from routelens.capture import RoutingRecorder

        n, L, k, E = shard.rows, self.L, self.k, self.E
        experts = np.empty((n, L, k), dtype=expert_id_numpy(self.routing.id_span))  # (tokens, layers, k)
        weights = np.empty((n, L, k), dtype=np.dtype(self.config.weights_dtype))  # (tokens, layers, k)
        probs = np.empty((n, L, E), dtype=np.float16) if self.config.store_probs else None  # (tokens, layers, E)
        norms = np.empty((n, L, k), dtype=np.float16) if self.config.store_expert_norms else None  # (tokens, layers, k)
        ahead = (
            np.empty((n, L, self.config.lookahead, k), np.int16) if self.config.lookahead else None
        )  # (tokens, layers, D, k)
        body = model_body(self.model)
        with (
            RoutingRecorder(self.model, self.routing, store_probs=self.config.store_probs) as recorder,
            self._norm_recorder() as norm_recorder,
            self._lookahead_recorder() as ahead_recorder,
        ):
            for rows in batch_rows(shard.windows, self.config.batch_size, equal_lengths=self.unpadded):
                batch = [shard.windows[i] for i in rows]
                ids, mask = right_padded(batch, self.pad_id)
                body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
                got = recorder.take()
                keep = mask.reshape(-1).bool().to(got.experts.device)
                # (B*T, L, k) -> (real tokens, L, k), in batch-row order, on the CPU whatever
                # device the layers ran on
                e = got.experts[keep].cpu().numpy()
                assert e.size == 0 or int(e.max()) < self.routing.id_span, "an expert id beyond the stored id type"
                wts = got.weights[keep].float().cpu().numpy()
                p = got.probs[keep].cpu().numpy() if probs is not None else None
                nrm = norm_recorder.take(got.experts)[keep].cpu().numpy() if norms is not None else None
                ah = ahead_recorder.take()[keep.cpu()].numpy() if ahead is not None else None
                at = 0
                for w in batch:
                    m = len(w.ids)
                    experts[w.row : w.row + m] = e[at : at + m]
                    weights[w.row : w.row + m] = wts[at : at + m]
                    if probs is not None:
                        probs[w.row : w.row + m] = p[at : at + m]
                    if norms is not None:
                        norms[w.row : w.row + m] = nrm[at : at + m]
                    if ahead is not None:
                        ahead[w.row : w.row + m] = ah[at : at + m]
                    at += m
        return self._table(shard, experts, weights, probs, norms, ahead)

    def _lookahead_recorder(self):
        from contextlib import nullcontext

        from routelens.trace.lookahead import LookaheadRecorder

        return (
            LookaheadRecorder(self.model, self.routing, self.config.lookahead)
            if self.config.lookahead
            else nullcontext()
        )

    def _norm_recorder(self):
        from contextlib import nullcontext

        from routelens.trace.norms import ExpertNormRecorder

        return ExpertNormRecorder(self.model, self.routing) if self.config.store_expert_norms else nullcontext()

    def _table(self, shard: Shard, experts, weights, probs, norms=None, ahead=None) -> pa.Table:
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
            nested_array(experts, expert_id_type(self.routing.id_span)),
            nested_array(weights, pa.from_numpy_dtype(weights.dtype)),
        ]
        if probs is not None:
            columns.append(nested_array(probs, pa.float16()))
        if self.with_pos:
            columns.append(pa.array(word_index, mask=word_index < 0))
            columns.append(pa.DictionaryArray.from_arrays(pa.array(upos, mask=upos < 0), pa.array(UPOS_TAGS)))
        if norms is not None:
            columns.append(nested_array(norms, pa.float16()))
        if ahead is not None:
            columns.append(lookahead_array(ahead))
        return pa.Table.from_arrays(columns, schema=self.schema)
