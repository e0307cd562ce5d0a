"""Lookahead predictability against planted answers: a predictor that is right on a known share of
tokens gives that share, the previous-token predictor is scored on the same target layer, and the
fill of missing layers is never counted."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis import analyze
from routelens.analysis.lookahead import LookaheadAccumulator, set_hits
from tests.simulate.conftest import write_planted_trace


def test_set_hits_counts_each_chosen_expert_once_and_ignores_fill():
    pred = np.array([[0, 1], [1, 0], [2, 3], [-1, 4], [-1, -1]])
    true = np.array([[0, 1], [0, 1], [3, 5], [4, 6], [0, 1]])
    hits, exact = set_hits(pred, true)
    assert hits.tolist() == [2, 2, 1, 1, 0] and exact.tolist() == [True, True, False, False, False]


def planted(n_docs=40, doc_len=50, seed=0):
    """3 layers, top-2 of 8. Layer l+1's prediction from layer l is right on every even position
    and names two experts the token did not choose on odd ones; each token repeats the previous
    token's experts at every layer exactly when its position is a multiple of 4."""
    rng = np.random.default_rng(seed)
    T, L, k, E = n_docs * doc_len, 3, 2, 8
    pos = np.tile(np.arange(doc_len), n_docs)
    experts = np.stack([rng.permutation(E)[:k] for _ in range(T * L)]).reshape(T, L, k)
    for t in range(1, T):
        if pos[t] % 4 == 0 and pos[t] > 0:
            experts[t] = experts[t - 1]
    ahead = np.full((T, L, 2, k), -1, np.int16)  # D = 2
    for t in range(T):
        for layer in range(L):
            for d in (1, 2):
                target = layer + d
                if target >= L:
                    continue
                chosen = experts[t, target]
                others = [e for e in range(E) if e not in chosen][:k]
                ahead[t, layer, d - 1] = chosen[::-1] if pos[t] % 2 == 0 else others
    return experts, ahead, [doc_len] * n_docs, pos


def test_planted_predictor_and_previous_token(tmp_path):
    experts, ahead, lengths, pos = planted()
    path = write_planted_trace(tmp_path / "t", experts, lengths, 8, lookahead=ahead)
    result = analyze(path, progress=False, bootstrap=0)["lookahead"]
    assert set(result) == {"0", "1", "2"} and set(result["0"]) == {"1", "2"} and result["2"] == {}
    assert set(result["1"]) == {"1"}  # layer 1 + 2 does not exist: the fill is never scored
    for layer, d in (("0", "1"), ("0", "2"), ("1", "1")):
        cell = result[layer][d]
        assert cell["exact"] == pytest.approx(0.5) and cell["recall"] == pytest.approx(0.5)
        assert cell["tokens"] == len(experts) and 0 < cell["exact_se"] < 0.02
        # previous-token predictor: exact on positions 4, 8, ... (> 0); otherwise chance overlap
        repeats = np.sum((pos % 4 == 0) & (pos > 0))
        assert cell["previous_pairs"] == len(experts) - len(lengths)
        assert cell["previous_exact"] >= repeats / cell["previous_pairs"]
        assert cell["previous_exact"] == pytest.approx(repeats / cell["previous_pairs"], abs=0.05)


def test_chunked_stream_equals_one_pass():
    experts, ahead, lengths, pos = planted(n_docs=6, doc_len=30, seed=2)
    doc = np.repeat(np.arange(len(lengths)), lengths)
    whole = LookaheadAccumulator(3, 2, 2)
    whole.update(experts, ahead, doc, pos)
    parts = LookaheadAccumulator(3, 2, 2)
    for lo in range(0, len(doc), 37):  # cuts inside documents
        parts.update(experts[lo : lo + 37], ahead[lo : lo + 37], doc[lo : lo + 37], pos[lo : lo + 37])
    names = ["0", "1", "2"]
    assert whole.result(names) == parts.result(names)


def test_no_lookahead_column_no_key(tmp_path):
    experts, _, lengths, _ = planted(n_docs=4, doc_len=20)
    path = write_planted_trace(tmp_path / "t", experts, lengths, 8)
    assert "lookahead" not in analyze(path, progress=False, bootstrap=0)
