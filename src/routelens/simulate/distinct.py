"""Distinct experts per batch: how many of a layer's experts one batch touches, which is what an
offloading server must hold (or load) per step.

For every layer and every full batch of B tokens the number of distinct experts its assignments
use, summarised as mean, median, 95th percentile and maximum, in two batchings
(`simulate.batches`): B consecutive tokens of the trace, and B concurrent sequences decoding
together (one token of each per step, the way a server batches requests). Routing locality
makes consecutive tokens share experts; concurrent sequences share less. The chance line is
uniform routing: B tokens each picking k of E experts at random touch E (1 - (1 - k/E)^B)
on average. Counts are held as a histogram of 0..E per layer, so memory does not grow with the
trace; per-batch counts are held for groups of batches of about `memory_bytes`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.config import build_config, setting
from routelens.errors import RoutelensError
from routelens.simulate.batches import DecodeBatches, document_lengths, stream_counts
from routelens.simulate.output import check_output, write_output
from routelens.store import Trace, open_trace

DEFAULT_MEMORY = 256 << 20  # bytes of per-batch counts held at once


@dataclass
class DistinctConfig:
    batch: int = setting(16, "Tokens per batch: consecutive tokens, and concurrent sequences in the decode batching.")
    memory_bytes: int = DEFAULT_MEMORY  # per-batch counts held at once (one pass over the trace per group)
    rows: int = 1 << 20  # rows per chunk read at once

    def __post_init__(self):
        if self.batch < 1:
            raise RoutelensError(f"--batch {self.batch} must be at least 1 token.")
        if self.memory_bytes < 1 or self.rows < 1:
            raise RoutelensError(f"memory_bytes={self.memory_bytes} and rows={self.rows} must be positive.")


def uniform_distinct(num_experts: int, top_k: int, batch: int) -> float:
    """Expected distinct experts of `batch` tokens routed uniformly at random (k distinct each)."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)


def histogram_summary(hist: np.ndarray) -> dict:
    """{mean, p50, p95, max, batches} of a histogram over 0..E distinct experts (pure)."""
    total = int(hist.sum())
    if total == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None, "batches": 0}
    values = np.arange(len(hist))
    cdf = np.cumsum(hist) / total
    return {
        "mean": float((values * hist).sum() / total),
        "p50": int(np.searchsorted(cdf, 0.5)),
        "p95": int(np.searchsorted(cdf, 0.95)),
        "max": int(values[hist > 0].max()),
        "batches": total,
    }


def _add_histogram(hist: np.ndarray, counts: np.ndarray, full: np.ndarray) -> None:
    """hist (L, E + 1) += distinct experts of the full batches (`full` (batches,) bool) of counts (L, batches, E)."""
    distinct = (counts[:, full] > 0).sum(axis=2)  # (L, full batches)
    for li in range(len(hist)):
        hist[li] += np.bincount(distinct[li], minlength=hist.shape[1])


def simulate_distinct(
    trace: Trace | str | Path,
    config: DistinctConfig | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    **overrides,
) -> dict:
    """Distinct experts per batch and layer; keyword overrides set DistinctConfig fields, e.g.
    `simulate_distinct(trace, batch=32)`.

    Returns `distinct` {layer: {mean, p50, p95, max, batches}} over full batches of `batch`
    consecutive tokens, `distinct_decode` (same, `batch` sequences decoding together; steps with
    fewer sequences left out) and `distinct_meta` (batch, num_experts, top_k, uniform: the
    expectation under uniform random routing, tokens). With `json_path` the result is also
    written there (the path is checked before the pass).
    """
    check_output(json_path)
    config = build_config(DistinctConfig, config, overrides)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    T, L, E, k, B = trace.num_tokens, len(trace.layers), trace.num_ids, trace.top_k, config.batch
    if T == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace a non-empty corpus.")
    group = max(1, config.memory_bytes // (L * E * 4))
    nb = -(-T // B)
    full = np.arange(nb) < T // B  # the last batch may be short
    consecutive, decoded = np.zeros((L, E + 1), np.int64), np.zeros((L, E + 1), np.int64)
    for lo in range(0, nb, group):
        hi = min(nb, lo + group)
        counts, _ = stream_counts(trace, B, lo, hi, rows=config.rows)
        _add_histogram(consecutive, counts, full[lo:hi])
    decode = DecodeBatches(document_lengths(trace, config.rows), B)
    for lo in range(0, decode.steps, group):
        hi = min(decode.steps, lo + group)
        decode.rewind()
        _, counts = stream_counts(trace, B, lo, hi, decode, rows=config.rows, consecutive=False)
        _add_histogram(decoded, counts, decode.sizes[lo:hi] == B)
    layers = [str(layer) for layer in trace.layers]
    result = {
        "distinct": {layer: histogram_summary(consecutive[li]) for li, layer in enumerate(layers)},
        "distinct_decode": {layer: histogram_summary(decoded[li]) for li, layer in enumerate(layers)},
        "distinct_meta": {
            "batch": B,
            "num_experts": trace.num_experts,  # routed experts
            "num_ids": E,  # what the distinct counts range over
            "top_k": k,
            "uniform": uniform_distinct(E, k, B),
            "tokens": int(T),
            "decode_steps": decode.steps,
        },
    }
    return write_output(result, json_path)
