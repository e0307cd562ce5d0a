"""Vocabulary specialization and typical tokens: planted token -> expert maps and a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis import analyze
from routelens.analysis.vocabulary import (
    TokenExpertCounter,
    specialization,
    typical_tokens,
)
from tests.analysis.planted import (
    brute_specialization,
    make_chunk,
    random_experts,
    write_trace,
)


def _planted(n_docs=40, doc_len=50, E=8, k=2, L=3, vocab=30, seed=0):
    """Layer 0: the first expert is token_id % E; layer 1: it is next token's id % E; others random."""
    rng = np.random.default_rng(seed)
    n = n_docs * doc_len
    token = rng.integers(0, vocab, size=n).astype(np.int32)
    experts = random_experts(n, L, E, k, rng)
    for layer, target in ((0, token), (1, np.roll(token, -1))):
        first = (target % E).astype(experts.dtype)
        rest = random_experts(n, 1, E - 1, k - 1, rng)[:, 0]  # distinct others, skipping `first`
        experts[:, layer, 0] = first
        experts[:, layer, 1:] = rest + (rest >= first[:, None])
    return make_chunk([doc_len] * n_docs, experts, token_id=token), E


def test_token_id_determining_the_expert_gives_one(tmp_path):
    chunk, E = _planted()
    vocab = [f"tok{i}" for i in range(30)]
    res = analyze(
        write_trace(tmp_path / "t", chunk, E=E, layers=(0, 5, 9), shard_rows=333, vocab=vocab),
        bootstrap=0,
        progress=False,
        max_distance=1,
        min_count=5,
        rows=128,
    )
    assert res["vocabulary"]["0"] == pytest.approx(1.0)
    assert res["vocabulary"]["5"] < 0.9 and res["vocabulary"]["9"] < 0.9
    # next-token view: layer 5's expert is set by the next token (the roll wraps only across documents)
    assert res["vocabulary_next"]["5"] == pytest.approx(1.0)
    assert res["vocabulary_next"]["0"] < 0.9
    table = res["vocabulary_tokens"]["0"]["3"]
    assert len(table) == 10  # the 4 planted ids, then ids that reach expert 3 as a second choice
    top = table[:4]
    assert {t["token_id"] for t in top} == {3, 11, 19, 27}  # ids with id % 8 == 3
    assert all(t["share"] == 1.0 and t["token"] == f"tok{t['token_id']}" for t in top)
    assert all(t["share"] < 0.5 for t in table[4:])
    counts = [t["count"] for t in top]
    assert counts == sorted(counts, reverse=True) and sum(counts) == int((chunk.token_id % 8 == 3).sum())


def test_specialization_matches_per_token_loop_and_min_count():
    rng = np.random.default_rng(1)
    token = rng.zipf(1.5, size=600).clip(max=60).astype(np.int32)
    experts = random_experts(600, 2, 6, 2, rng)
    counter = TokenExpertCounter(2, 6, vocab_size=4)  # grows past the hint
    for lo in range(0, 600, 100):
        counter.update(token[lo : lo + 100], experts[lo : lo + 100])
    for min_count in (1, 5, 40):
        np.testing.assert_allclose(specialization(counter, min_count), brute_specialization(token, experts, min_count))
    assert np.isnan(specialization(counter, 10_000)).all()


def test_dense_and_sparse_counts_agree():
    rng = np.random.default_rng(2)
    E = 300
    token = rng.integers(0, 5000, size=3000).astype(np.int32)
    experts = random_experts(3000, 2, E, 4, rng).astype(np.uint16)
    dense, sparse = TokenExpertCounter(2, E, 10, dense=True), TokenExpertCounter(2, E, 10, dense=False)
    for lo in range(0, 3000, 700):
        for c in (dense, sparse):
            c.update(token[lo : lo + 700], experts[lo : lo + 700])
    for a, b in zip(dense.triplets(), sparse.triplets()):
        assert a.tolist() == b.tolist()
    np.testing.assert_allclose(specialization(dense, 2), specialization(sparse, 2))
    assert typical_tokens(dense, 2) == typical_tokens(sparse, 2)
    assert sum(len(x) for x in typical_tokens(dense, 1)[0]) == 10 * E  # every expert has >= 10 ids


def test_dense_counts_turn_sparse_when_the_vocabulary_outgrows_the_limit(monkeypatch):
    from routelens.analysis import vocabulary

    rng = np.random.default_rng(3)
    token = rng.integers(0, 40, size=400).astype(np.int32)
    token[300:] += 1000  # later chunks bring far larger ids
    experts = random_experts(400, 3, 5, 2, rng)
    monkeypatch.setattr(vocabulary, "DENSE_LIMIT", 3 * 5 * 200)
    grown, sparse = TokenExpertCounter(3, 5, 50), TokenExpertCounter(3, 5, 50, dense=False)
    assert grown.dense
    for lo in range(0, 400, 100):
        grown.update(token[lo : lo + 100], experts[lo : lo + 100])
        sparse.update(token[lo : lo + 100], experts[lo : lo + 100])
    assert not grown.dense
    for a, b in zip(grown.triplets(), sparse.triplets()):
        assert a.tolist() == b.tolist()
    np.testing.assert_allclose(specialization(grown, 1), brute_specialization(token, experts, 1))


# -- issue 12: the count- and load-matched chance line -----------------------------------------
def _zipf_tokens(n: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, size=n, p=p / p.sum()).astype(np.int32)


def brute_null(token: np.ndarray, E: int, k: int, min_count: int, draws: int, rng) -> float:
    """The same expectation by simulation, written plainly: every token id with N(t) >= min_count
    routed N(t) times uniformly at random (top-k of E), max share of its experts, averaged."""
    counts = np.bincount(token)
    values = []
    for _ in range(draws):
        shares = []
        for c in counts[counts >= min_count]:
            picks = np.argsort(rng.random((c, E)), axis=1)[:, :k]
            shares.append(np.bincount(picks.ravel(), minlength=E).max() / c)
        values.append(np.mean(shares))
    return float(np.mean(values))


def test_uniform_routing_over_zipf_tokens_meets_the_matched_null_not_k_over_e(tmp_path):
    """Uniform random routing of Zipf-distributed tokens: k/E = 0.25, but the max over experts of a
    token's finite sample is larger (about 0.4 here); the count- and load-matched null is what
    the real value must be compared with, and it matches. A planted specialization exceeds it."""
    rng = np.random.default_rng(0)
    E, k, n = 8, 2, 40_000
    token = _zipf_tokens(n, 2000, rng)
    experts = random_experts(n, 2, E, k, rng)  # (n, 2 layers, k): layer 0 uniform, layer 1 planted
    planted = (token % E).astype(experts.dtype)
    hit = rng.random(n) < 0.5  # half the occurrences of each token go to its own expert first
    other = experts[hit, 1, 1]
    experts[hit, 1, 0] = planted[hit]
    experts[hit, 1, 1] = np.where(other == planted[hit], (other + 1) % E, other)
    chunk = make_chunk([500] * (n // 500), experts, token_id=token)
    res = analyze(
        write_trace(tmp_path / "z", chunk, E=E, layers=(0, 1), shard_rows=7000),
        bootstrap=0,
        progress=False,
        max_distance=1,
        rows=9000,
    )
    uniform, null = res["vocabulary"]["0"], res["vocabulary_null"]["0"]
    assert uniform > k / E + 0.1  # far above k/E = 0.25: the old chance line was wrong
    expected = brute_null(token, E, k, 10, draws=3, rng=np.random.default_rng(1))
    assert null == pytest.approx(expected, abs=0.01)
    assert uniform == pytest.approx(null, abs=0.01)  # no specialization: at the matched null
    assert res["vocabulary"]["1"] > res["vocabulary_null"]["1"] + 0.2  # planted: well above it
    assert res["vocabulary_null"]["1"] == pytest.approx(null, abs=0.02)  # load nearly uniform in both


def test_matched_null_follows_an_unbalanced_load(tmp_path):
    """A router that sends 70% of every token's occurrences to expert 0 (k = 1) gives ~0.7 to
    every frequent token without any token dependence: the null says so, k/E does not."""
    rng = np.random.default_rng(2)
    n, E = 20_000, 8
    token = _zipf_tokens(n, 500, rng)
    first = np.where(rng.random(n) < 0.7, 0, rng.integers(1, E, n)).astype(np.uint8)
    chunk = make_chunk([200] * (n // 200), first.reshape(n, 1, 1), token_id=token)
    res = analyze(write_trace(tmp_path / "u", chunk, E=E, layers=(0,)), bootstrap=0, progress=False, max_distance=1)
    assert res["vocabulary"]["0"] == pytest.approx(res["vocabulary_null"]["0"], abs=0.01)
    assert res["vocabulary_null"]["0"] > 0.7
