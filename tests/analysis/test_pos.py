"""`analyze_pos` end to end on planted traces written in the real format: word selection per
policy, chunk boundaries, the result's keys and planted answers, user errors, and the figures."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from routelens.analysis.pos import (
    PosConfig,
    WordPolicy,
    analyze_pos,
    load_word_rows,
    select_word_rows,
)
from routelens.corpus.upos import UPOS_TAGS
from routelens.errors import RoutelensError
from routelens.store.reader import open_trace
from routelens.synthetic import SyntheticSpec, write_synthetic_trace
from tests.analysis.pos_planted import planted_words, random_routing, write_pos_trace

PUNCT = UPOS_TAGS.index("PUNCT")


def brute_words(rows):
    """[(row indices of the word, tuple of its token ids, tag)] by a plain loop."""
    words, current, key = [], [], None
    for i, (d, w, u) in enumerate(zip(rows["doc_id"], rows["word_index"], rows["upos"])):
        if w < 0 or u < 0:
            key = None
            continue
        if (d, w) != key:
            current = [i]
            words.append(current)
            key = (d, w)
        else:
            current.append(i)
    return [(idx, tuple(rows["token_id"][idx]), rows["upos"][idx[0]]) for idx in words]


@pytest.mark.parametrize("policy", list(WordPolicy))
def test_word_policy_selects_the_right_rows(policy):
    rows = planted_words(30, 8, ["NOUN", "VERB", "PUNCT"], seed=1, max_pieces=4)
    got_rows, got_word, got_form = select_word_rows(
        rows["doc_id"], rows["word_index"], rows["upos"], rows["token_id"], policy
    )
    words = brute_words(rows)
    if policy is WordPolicy.FIRST:
        expected = [idx[0] for idx, _, _ in words]
    elif policy is WordPolicy.LAST:
        expected = [idx[-1] for idx, _, _ in words]
    else:
        expected = [i for idx, _, _ in words for i in idx]
    np.testing.assert_array_equal(got_rows, expected)
    owners = [w for w, (idx, _, _) in enumerate(words) for _ in (idx if policy is WordPolicy.EVERY else [0])]
    np.testing.assert_array_equal(got_word, owners)
    # Equal form ids <=> equal token-id tuples.
    tuples = [words[w][1] for w in owners]
    for a in range(0, len(tuples), 7):
        for b in range(len(tuples)):
            assert (got_form[a] == got_form[b]) == (tuples[a] == tuples[b])


def test_loading_is_the_same_across_shard_and_chunk_boundaries(tmp_path):
    rows = planted_words(40, 6, ["NOUN", "DET"], seed=2)
    experts = random_routing(len(rows["doc_id"]), 2, 4, 2, np.random.default_rng(0))
    one = load_word_rows(open_trace(write_pos_trace(tmp_path / "one", rows, experts, (0, 1), 4)), "last")
    # 37-row shards and 10-row chunks cut through words and sentences everywhere.
    many_trace = open_trace(write_pos_trace(tmp_path / "many", rows, experts, (0, 1), 4, shard_rows=37))
    assert len(many_trace.shards) > 5
    many = load_word_rows(many_trace, "last", rows_per_chunk=10)
    for name in ("experts", "tags", "doc_id", "form", "word"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name))
    assert one.num_words == many.num_words == 240


@pytest.fixture(scope="module")
def planted_result(tmp_path_factory):
    """PUNCT always routed to expert 5 at layer 3; tokens of the word's later pieces random."""
    rows = planted_words(240, 10, ["NOUN", "VERB", "DET", "PUNCT", "ADJ"], seed=0)
    n = len(rows["doc_id"])
    experts = random_routing(n, 3, 8, 2, np.random.default_rng(1))
    first_piece = np.r_[True, (rows["word_index"][1:] != rows["word_index"][:-1])] & (rows["upos"] == PUNCT)
    experts[first_piece, 1, 0] = 5
    experts[first_piece, 1, 1] = np.where(experts[first_piece, 1, 1] == 5, 6, experts[first_piece, 1, 1])
    path = write_pos_trace(
        tmp_path_factory.mktemp("pos") / "trace",
        rows,
        experts,
        (0, 3, 7),
        8,
        shard_rows=999,
    )
    return analyze_pos(path, progress=False, permutations=100, tsne_points=300, max_epochs=20, hidden=32)


def test_analyze_pos_keys_and_planted_answer(planted_result):
    r = planted_result
    assert set(r["specialization"]) == set(r["shares"]) == {"0", "3", "7"}
    assert set(r["counts"]) == {"NOUN", "VERB", "DET", "PUNCT", "ADJ"}
    assert r["num_words"] == r["num_rows"] == 2400 and r["policy"] == "first"
    punct = r["specialization"]["3"]["PUNCT"]
    assert punct["expert"] == 5 and punct["max_share"] == 1.0
    assert punct["p_permutation"] == pytest.approx(1 / 101)  # never reached by a within-document shuffle
    # The scaled chi-square p goes below what 100 shuffles can show, so the correction over the
    # 15 tests (3 layers x 5 tags) can still call it significant.
    assert punct["p_value"] < 1 / 101 and punct["p_adjusted"] < 0.05 and punct["significant"]
    assert punct["max_share_low"] <= punct["max_share"] <= punct["max_share_high"]
    assert set(punct) >= {"expert", "max_share", "kl", "p_value", "p_adjusted", "significant"}
    assert r["tests"]["family"] == 15 and r["tests"]["correction"] == "fdr_bh"
    for layer in ("0", "7"):
        for tag, entry in r["specialization"][layer].items():
            assert entry["max_share"] < 0.4, (
                layer,
                tag,
            )  # chance 0.25, ~480 tokens per tag
    assert sum(r["shares"]["3"]["PUNCT"]) == pytest.approx(2.0)
    probe = r["probe"]
    assert set(probe) >= {
        "accuracy",
        "macro_f1",
        "baseline_majority",
        "baseline_word",
        "shuffled",
    }
    # PUNCT (1/5 of words) is recognisable, the rest is chance among 4: ~0.2 + 0.8/4 = 0.4.
    assert probe["accuracy"] > probe["shuffled"] + 0.1
    ab = r["ablation"]
    assert set(ab) >= {"single", "prefix", "drop"} and ab["best_single"] == "3" and ab["most_needed"] == "3"
    assert r["tsne"]["silhouette"]["PUNCT"] > r["tsne"]["silhouette_shuffled"]["PUNCT"] + 0.05
    assert len(r["tsne"]["points"]) == len(r["tsne"]["labels"]) == 300
    json.loads(json.dumps(r))  # plain JSON types only


def test_last_token_policy_misses_the_plant_on_first_pieces(tmp_path, planted_result):
    """The plant is on each word's first token: with policy `last` multi-token PUNCT words lose it."""
    rows = planted_words(60, 10, ["NOUN", "PUNCT"], seed=5, max_pieces=2)
    n = len(rows["doc_id"])
    experts = random_routing(n, 1, 8, 1, np.random.default_rng(2))
    starts = np.r_[True, rows["word_index"][1:] != rows["word_index"][:-1]]
    experts[starts & (rows["upos"] == PUNCT), 0, 0] = 5
    path = write_pos_trace(tmp_path / "t", rows, experts, (0,), 8)
    share = {}
    for policy in ("first", "last"):
        r = analyze_pos(
            path,
            policy=policy,
            progress=False,
            permutations=20,
            tsne_points=0,
            ablation=False,
            max_epochs=5,
        )
        share[policy] = r["shares"]["0"]["PUNCT"][5]
    assert share["first"] == 1.0
    assert 0.4 < share["last"] < 0.75  # half the words have 2 pieces: ~0.5 + 0.5/8


def test_trace_without_pos_columns_is_a_user_error(tmp_path):
    path = write_synthetic_trace(tmp_path / "t", SyntheticSpec(num_docs=3, doc_len=8))
    with pytest.raises(RoutelensError, match="no part-of-speech columns.*--tagger spacy"):
        analyze_pos(path, progress=False)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"policy": "middle"}, "word policy 'middle'"),
        ({"features": "all"}, "path features 'all'"),
        ({"test_size": 1.5}, "test_size=1.5"),
        ({"permutations": 0}, "permutations=0"),
        ({"correction": "bonferroni"}, "correction 'bonferroni' is unknown; use one of fdr_bh, holm, none"),
        ({"alpha": 1.0}, "alpha=1.0"),
        ({"min_words": 0}, "min_words=0"),
        ({"splits": 0}, "splits=0"),
        ({"ablation_classifier": "svm"}, "ablation classifier 'svm'"),
    ],
)
def test_config_errors_name_the_value(bad, message):
    with pytest.raises(RoutelensError, match=message):
        PosConfig(**bad)


def test_figures_render_from_the_json_round_trip(planted_result):
    from routelens.report.figures import pos  # the report draws the analysis' figures

    result = json.loads(json.dumps(planted_result))
    heat = pos.specialization_figure(result, ["3", "7"])
    assert len([ax for ax in heat.axes if ax.get_visible() and ax.get_title()]) == 2
    assert heat.axes[0].images[0].get_array().shape == (5, 8)  # (tags, experts)
    ablation = pos.ablation_figure(result)
    assert len(ablation.axes[0].lines) == 3 + 3  # three curves + three reference lines
    scatter = pos.path_map_figure(result)
    assert sum(len(c.get_offsets()) for c in scatter.axes[0].collections) == 300
    for fig in (heat, ablation, scatter):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:4] == b"\x89PNG"
