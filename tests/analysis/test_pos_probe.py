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
    r = layer_ablation(experts, tags, split, 8, [0, 1, 2], seed=0, classifier="linear")  # the warm-started path
    assert r["classifier"].startswith("LogisticRegression")
    train, test = split

    def cold(subset):
        X = path_features(experts[:, subset], 8)
        return linear_probe(0).fit(X[train], tags[train]).score(X[test], tags[test])

    for name, subset in [
        ("prefix", ("2", [0, 1])),
        ("prefix", ("3", [0, 1, 2])),
        ("drop", ("1", [0, 2])),
        ("drop", ("0", [1, 2])),
        ("single", ("2", [2])),
    ]:
        key, layers = subset
        assert r[name][key] == pytest.approx(cold(layers), abs=0.015), (name, key)


# -- issue 12: the ablation's classifier, splits by sentence text, spread over splits ----------
PAIRS_A = [(0, 1), (2, 3)]  # tag 0: one of these expert pairs at the planted layer
PAIRS_B = [(0, 2), (0, 3), (1, 2), (1, 3)]  # tag 1: one of these (same experts, other pairings)


def pair_planted(n_docs=400, per_doc=10, L=3, layer=1, seed=0):
    """Top-2 of 4: the tag decides which *pair* of experts layer `layer` chooses; every expert is
    equally likely under both tags, so no expert (no single multi-hot column) carries the tag,
    and no linear function of the layer's multi-hot vector separates the two sets of pairs."""
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    tags = rng.integers(0, 2, n)
    experts = random_routing(n, L, 4, 2, rng)
    for t, pairs in ((0, PAIRS_A), (1, PAIRS_B)):
        rows = np.flatnonzero(tags == t)
        chosen = np.array(pairs)[rng.integers(0, len(pairs), len(rows))]
        experts[rows, layer] = chosen[:, rng.permutation(2)]
    return experts, tags, np.repeat(np.arange(n_docs), per_doc)


def test_mlp_ablation_finds_a_pair_coded_tag_that_the_linear_one_misses():
    experts, tags, doc = pair_planted()
    split = split_by_document(doc, seed=0)
    mlp_run = layer_ablation(experts, tags, split, 4, [0, 5, 9], seed=0, hidden=32, max_epochs=40)
    linear = layer_ablation(experts, tags, split, 4, [0, 5, 9], seed=0, classifier="linear")
    assert mlp_run["classifier"].startswith("MLPClassifier") and linear["classifier"].startswith("LogisticRegression")
    assert mlp_run["single"]["5"] > 0.95 and mlp_run["best_single"] == "5" and mlp_run["most_needed"] == "5"
    assert mlp_run["drop"]["5"] < 0.6 and mlp_run["full"] > 0.95
    assert linear["single"]["5"] < 0.7  # the linear probe cannot read the pair (chance 0.5)


def test_duplicated_sentences_never_straddle_a_split_and_scores_have_a_spread(tmp_path):
    from routelens.analysis.pos import analyze_pos, load_word_rows
    from routelens.store.reader import open_trace
    from tests.analysis.pos_planted import planted_words, write_pos_trace

    rows = planted_words(120, 8, ["NOUN", "VERB", "PUNCT"], seed=4)
    # Sentences 1..29 become copies of sentence 0 (all its rows, BOS included): 30 identical texts.
    sentences = [{k: v[rows["doc_id"] == d] for k, v in rows.items()} for d in range(120)]
    for d in range(1, 30):
        sentences[d] = {k: (np.full_like(v, d) if k == "doc_id" else v.copy()) for k, v in sentences[0].items()}
    rows = {k: np.concatenate([sent[k] for sent in sentences]) for k in rows}
    doc = rows["doc_id"]
    n = len(doc)
    experts = random_routing(n, 2, 8, 2, np.random.default_rng(0))
    path = write_pos_trace(tmp_path / "dup", rows, experts, (0, 1), 8)
    words = load_word_rows(open_trace(path))
    groups = words.groups()
    assert len(np.unique(groups[words.doc_id < 30])) == 1  # the 30 copies share one sentence id
    assert len(np.unique(groups)) == 120 - 29
    from routelens.analysis.pos_probe import group_splits

    for train, test in group_splits(groups, splits=5, seed=0):
        assert not set(groups[train]) & set(groups[test])
        copies_in_test = np.isin(words.doc_id[test], np.arange(30)).any()
        copies_in_train = np.isin(words.doc_id[train], np.arange(30)).any()
        assert not (copies_in_test and copies_in_train)  # all 30 copies on one side
    r = analyze_pos(path, progress=False, permutations=20, tsne_points=0, ablation=False, max_epochs=5, hidden=16)
    probe = r["probe"]
    assert probe["splits"] == 5 and len(probe["per_split"]["accuracy"]) == 5
    assert probe["accuracy"] == pytest.approx(np.mean(probe["per_split"]["accuracy"]))
    assert probe["accuracy_sd"] == pytest.approx(np.std(probe["per_split"]["accuracy"], ddof=1))
    assert probe["accuracy_sd"] > 0 and probe["baseline_majority_sd"] > 0 and probe["baseline_word_sd"] >= 0
    assert probe["duplicate_rows"] == 30 * 8  # the words of the 30 copies
