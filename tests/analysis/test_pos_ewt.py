"""The POS analysis on real gold tags: a tiny random Mixtral traced over the start of the UD
English EWT dev set (skipped when ../shared/data is absent). A random router still sees token
identity, so its paths carry some part of speech; the word-form baseline on real English must
be strong, and the shuffled control must fall to the majority rate."""

from __future__ import annotations

import pytest

import routelens
from routelens.analysis.pos import analyze_pos
from tests.conftest import save_tiny_model, tiny_mixtral_config


@pytest.fixture(scope="module")
def ewt_result(tmp_path_factory):
    from tests.conftest import SHARED_DATA

    conllu = SHARED_DATA / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
    if not conllu.is_file():
        pytest.skip("../shared/data/ud-english-ewt is absent")
    root = tmp_path_factory.mktemp("ewt")
    model = save_tiny_model(root / "model", tiny_mixtral_config(num_hidden_layers=3))
    trace = routelens.trace(model, [f"ewt={conllu}"], root / "trace", max_tokens=12000, progress=False)
    return analyze_pos(trace, progress=False, permutations=100, tsne_points=300)


def test_probe_on_real_tags_beats_majority_and_is_compared_with_the_word_baseline(
    ewt_result,
):
    r = ewt_result
    assert r["num_documents"] > 80 and r["num_words"] > 2000
    assert {"NOUN", "VERB", "PUNCT", "DET", "ADP"} <= set(r["counts"])
    probe = r["probe"]
    assert 0.1 < probe["baseline_majority"] < 0.3  # NOUN is ~17% of EWT words
    assert probe["baseline_word"] > 0.6  # most English word forms have one tag
    assert probe["accuracy"] > probe["baseline_majority"] + 0.15
    assert probe["shuffled"] < probe["baseline_majority"] + 0.05
    assert set(r["ablation"]["single"]) == {"0", "1", "2"}


def test_specialization_table_on_real_tags(ewt_result):
    spec = ewt_result["specialization"]
    assert set(spec) == {"0", "1", "2"}
    for layer in spec.values():
        for entry in layer.values():
            assert 0.25 <= entry["max_share"] <= 1.0  # the largest of 8 shares summing to k=2
            assert 1 / 101 <= entry["p_permutation"] <= 1.0  # the Monte-Carlo p of 100 shuffles
            assert 0.0 <= entry["p_value"] <= 1.0
            if entry["tested"]:  # at least min_words words: in the corrected family
                assert entry["p_value"] <= entry["p_adjusted"] <= 1.0
            else:
                assert entry["p_adjusted"] is None and not entry["significant"] and entry["n"] < 30
    # Routing depends on the token, the token on the tag: frequent tags deviate at layer 0.
    assert spec["0"]["PUNCT"]["p_value"] < 0.05
    assert spec["0"]["PUNCT"]["significant"]  # after the correction over all layers x tags
