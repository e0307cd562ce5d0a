"""Decode batching (B concurrent sequences, one token of each per step) in the expert-parallel
simulator, and distinct experts per batch, on planted traces with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from routelens import RoutelensError
from routelens.simulate import simulate_balance
from routelens.simulate.batches import DecodeBatches, document_lengths
from routelens.simulate.distinct import simulate_distinct, uniform_distinct
from routelens.store import open_trace


def test_decode_steps_by_hand():
    # Lengths 2 5 1 on 2 slots: doc 0 steps 0-1 (slot 0), doc 1 steps 0-4 (slot 1), doc 2 takes slot 0
    # when it frees, step 2. Steps 0..4 hold 2 2 2 1 1 sequences.
    d = DecodeBatches(np.array([2, 5, 1]), 2)
    assert d.starts.tolist() == [0, 0, 2] and d.steps == 5 and d.sizes.tolist() == [2, 2, 2, 1, 1]
    whole = d.take(8)
    assert whole.tolist() == [0, 1, 0, 1, 2, 3, 4, 2]
    d.rewind()
    assert np.concatenate([d.take(3), d.take(1), d.take(4)]).tolist() == whole.tolist()  # chunking does not matter


def test_document_lengths_across_chunks(planted):
    path = planted(np.zeros((10, 1, 1), np.int64), [3, 4, 3], 2)
    assert document_lengths(open_trace(path), rows=4).tolist() == [3, 4, 3]


def test_decode_batching_spreads_what_consecutive_tokens_pile_up(planted):
    # Two documents of 4 tokens, k=1, E=2, 2 devices: document A routes every token to expert 0,
    # B to expert 1. Consecutive batches of 2: each batch sends both tokens to one expert of capacity
    # ceil(2 x 1 / 2) = 1: half the assignments dropped, the busy device at 2 / mean 1. Decoding
    # A and B together: each step holds one token of each, one per expert: nothing dropped, balanced.
    x = np.array([0, 0, 0, 0, 1, 1, 1, 1])[:, None, None]
    out = simulate_balance(
        planted(x, [4, 4], 2), devices=2, batch_tokens=2, cfs=(1.0,), placements=("round_robin",), decode_batch=2
    )
    assert out["balance"]["round_robin"]["1.0"] == {"dropped": 0.5, "imbalance_max_mean": 2.0}
    assert out["balance_decode"]["round_robin"]["1.0"] == {"dropped": 0.0, "imbalance_max_mean": 1.0}
    assert out["balance_meta"]["decode_steps"] == 4 and out["balance_meta"]["decode_batch"] == 2
    assert set(out["balance_decode_detail"]["round_robin"]) == {"0"}


def test_decode_batch_is_validated(planted):
    with pytest.raises(RoutelensError, match="--decode-batch 0"):
        simulate_balance(planted(np.zeros((4, 1, 1), np.int64), [4], 2), decode_batch=0)


def test_distinct_experts_per_batch_by_hand(planted):
    # k=1, E=4, batches of 2. Document A (6 tokens) routes 0 0 1 1 2 2, B (2 tokens) 3 3.
    # Consecutive batches: {0} {1} {2} {3}: one expert each. Decoding A and B together: steps 0 and 1
    # hold (A0, B0) = {0, 3} and (A1, B1) = {0, 3}: two each; steps 2..5 hold A alone (left out).
    x = np.array([0, 0, 1, 1, 2, 2, 3, 3])[:, None, None]
    out = simulate_distinct(planted(x, [6, 2], 4), batch=2)
    assert out["distinct"]["0"] == {"mean": 1.0, "p50": 1, "p95": 1, "max": 1, "batches": 4}
    assert out["distinct_decode"]["0"] == {"mean": 2.0, "p50": 2, "p95": 2, "max": 2, "batches": 2}
    assert out["distinct_meta"]["uniform"] == pytest.approx(4 * (1 - 0.75**2))


def test_distinct_uniform_expectation_matches_simulation():
    rng = np.random.default_rng(0)
    E, k, B = 8, 2, 5
    draws = [len(set(np.concatenate([rng.choice(E, k, replace=False) for _ in range(B)]))) for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(uniform_distinct(E, k, B), abs=0.03)
