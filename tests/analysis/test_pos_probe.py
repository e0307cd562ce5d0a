"""Routing-path probes: features, the sentence split, the word-form baseline, and probes on
paths that encode the tag (accuracy ~1), carry nothing (~majority), or carry it at one layer."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.pos_probe import (
    ablation_fits,
    layer_ablation,
    path_features,
    run_probe,
    split_by_document,
    word_form_predict,
)
from routelens.errors import RoutelensError
from tests.analysis.pos_planted import random_routing


def test_path_features_one_hot_and_multi_hot():
    experts = np.array([[[1, 3], [0, 2]], [[2, 0], [3, 1]]], dtype=np.uint8)  # (n=2, L=2, k=2)
    first = path_features(experts, 4, "first").toarray()
    topk = path_features(experts, 4, "topk").toarray()
    assert first.shape == topk.shape == (2, 8)
    brute_first = np.zeros((2, 8))
    brute_topk = np.zeros((2, 8))
    for i in range(2):
        for layer in range(2):
            brute_first[i, layer * 4 + experts[i, layer, 0]] = 1
            for e in experts[i, layer]:
                brute_topk[i, layer * 4 + e] = 1
    np.testing.assert_array_equal(first, brute_first)
    np.testing.assert_array_equal(topk, brute_topk)


def test_split_keeps_each_document_on_one_side():
    doc = np.repeat(np.arange(50), 7)
    train, test = split_by_document(doc, test_size=0.2, seed=0)
    assert len(train) + len(test) == len(doc)
    assert not set(doc[train]) & set(doc[test])
    assert len(set(doc[test])) == 10
    with pytest.raises(RoutelensError, match="at least 2 sentences"):
        split_by_document(np.zeros(10, np.int64))


def test_word_form_baseline_matches_brute_force():
    rng = np.random.default_rng(0)
    forms = rng.integers(0, 30, 400)
    tags = (forms % 4 + (rng.random(400) < 0.2)).astype(np.int64)  # mostly a function of the form
    test_forms = np.r_[rng.integers(0, 30, 100), [99, 100]]  # two unseen forms
    got = word_form_predict(forms, tags, test_forms)
    majority = np.bincount(tags).argmax()
    for f, g in zip(test_forms, got):
        seen = tags[forms == f]
        if len(seen) == 0:
            assert g == majority
        else:
            c = np.bincount(seen)
            assert g == np.flatnonzero(c == c.max())[0]


def planted_probe_data(n_docs=300, per_doc=10, L=3, E=8, k=2, informative=1, seed=0):
    """Tags 0..3; at layer `informative` the first expert is 2*tag (tag readable), elsewhere random."""
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    tags = rng.choice([0, 1, 2, 3], size=n, p=[0.4, 0.3, 0.2, 0.1])
    experts = random_routing(n, L, E, k, rng)
    experts[:, informative, 0] = 2 * tags
    experts[:, informative, 1] = 2 * tags + 1
    doc = np.repeat(np.arange(n_docs), per_doc)
    forms = rng.integers(0, 1000, n)  # forms carry nothing: the word baseline is ~majority
    return experts, tags, forms, doc


def test_probe_reads_a_tag_encoding_path_and_the_shuffled_control_does_not():
    experts, tags, forms, doc = planted_probe_data()
    r = run_probe(experts, tags, forms, doc, 8, hidden=32, max_epochs=30, seed=0)
    assert r["accuracy"] > 0.98 and r["macro_f1"] > 0.95
    assert r["baseline_majority"] == pytest.approx(0.4, abs=0.06)  # tag 0 has probability 0.4
    assert abs(r["shuffled"] - r["baseline_majority"]) < 0.08
    assert r["baseline_word"] < 0.55
    assert r["train_tokens"] + r["test_tokens"] == len(tags)


def test_probe_on_paths_without_information_stays_at_majority():
    rng = np.random.default_rng(3)
    experts, tags, forms, doc = planted_probe_data(seed=3)
    experts = random_routing(len(tags), 3, 8, 2, rng)
    r = run_probe(experts, tags, forms, doc, 8, hidden=32, max_epochs=30, seed=0)
    assert r["accuracy"] < r["baseline_majority"] + 0.06


def test_word_baseline_wins_when_forms_determine_tags():
    _experts, tags, _, doc = planted_probe_data()
    forms = tags * 10 + (np.arange(len(tags)) % 3)  # three spellings per tag, all seen in training
    r = run_probe(
        random_routing(len(tags), 3, 8, 2, np.random.default_rng(1)),
        tags,
        forms,
        doc,
        8,
        max_epochs=10,
    )
    assert r["baseline_word"] == 1.0
    assert r["accuracy"] < 0.6


def test_ablation_finds_the_planted_layer():
    experts, tags, _, doc = planted_probe_data(L=4, informative=2)
    split = split_by_document(doc, seed=0)
    calls = []
    r = layer_ablation(experts, tags, split, 8, [0, 3, 5, 9], seed=0, progress=lambda: calls.append(1))
    assert len(calls) == ablation_fits(4) == 12
    assert set(r["single"]) == set(r["drop"]) == {"0", "3", "5", "9"}
    assert set(r["prefix"]) == {"1", "2", "3", "4"}
    assert r["best_single"] == "5" and r["single"]["5"] > 0.98
    assert max(r["single"][x] for x in ("0", "3", "9")) < 0.5
    assert r["most_needed"] == "5" and r["drop"]["5"] < 0.5
    assert min(r["drop"][x] for x in ("0", "3", "9")) > 0.98
    # Prefixes gain the information exactly when they reach layer index 2.
    assert r["prefix"]["2"] < 0.5 and r["prefix"]["3"] > 0.98 and r["prefix"]["4"] == r["full"]


def test_warm_started_ablation_matches_cold_fits():
    """The warm starts and the full-width layout change the time, not the accuracies."""
    from routelens.analysis.pos_probe import linear_probe

    rng = np.random.default_rng(7)
    experts, tags, _, doc = planted_probe_data(n_docs=200, L=3, informative=1, seed=7)
    noisy = rng.random(len(tags)) < 0.3  # make the planted layer imperfect, so fits are not trivial
    experts[noisy, 1] = random_routing(int(noisy.sum()), 1, 8, 2, rng)[:, 0]
    split = split_by_document(doc, seed=0)
    r = layer_ablation(experts, tags, split, 8, [0, 1, 2], seed=0)
    train, test = split

    def cold(subset):
        X = path_features(experts[:, subset], 8)
        return linear_probe(0).fit(X[train], tags[train]).score(X[test], tags[test])

    for name, subset in [("prefix", ("2", [0, 1])), ("prefix", ("3", [0, 1, 2])), ("drop", ("1", [0, 2])),
                         ("drop", ("0", [1, 2])), ("single", ("2", [2]))]:  # fmt: skip
        key, layers = subset
        assert r[name][key] == pytest.approx(cold(layers), abs=0.015), (name, key)
