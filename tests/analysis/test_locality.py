"""Positional locality against planted Markov chains, closed forms and a per-token loop."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from routelens.analysis import analyze, random_baseline
from routelens.analysis.locality import PairCounter, PermutedCounter
from routelens.analysis.pairs import layer_major
from routelens.synthetic import SyntheticSpec, generate, write_synthetic_trace
from tests.analysis.planted import brute_locality, make_chunk, random_experts


def _feed(counter: PairCounter, chunk, E: int, rows: int) -> None:
    for lo in range(0, len(chunk), rows):
        sl = slice(lo, lo + rows)
        counter.update(*layer_major(chunk.experts[sl], E), chunk.doc_id[sl], chunk.position[sl], chunk.domain[sl])


def test_random_baseline_closed_forms():
    assert random_baseline(8, 2) == pytest.approx({"first": 0.125, "any": 1 - 15 / 28})
    assert round(random_baseline(8, 2)["any"], 3) == 0.464
    assert random_baseline(8, 1)["any"] == pytest.approx(1 / 8)  # one expert: any == first
    assert random_baseline(64, 8)["any"] == pytest.approx(1 - comb(56, 8) / comb(64, 8))
    assert random_baseline(4, 3)["any"] == 1.0  # two 3-subsets of 4 always meet


@pytest.mark.parametrize("repeat", [0.0, 0.5])
def test_markov_chain_gives_planted_first_and_any(tmp_path, repeat):
    E, k = 8, 2
    spec = SyntheticSpec(num_docs=150, doc_len=100, layers=(0, 3, 7), num_experts=E, top_k=k, repeat=repeat, seed=3)
    res = analyze(write_synthetic_trace(tmp_path / "t", spec), bootstrap=0, progress=False, max_distance=3)
    base = random_baseline(E, k)
    for layer in ("0", "3", "7"):
        cell = res["locality"]["all"][layer]
        # first repeats with p=repeat, else a fresh uniform draw; a fresh top-k set is a uniform k-subset.
        assert cell["first"] == pytest.approx(repeat + (1 - repeat) / E, abs=0.012)
        assert cell["any"] == pytest.approx(repeat + (1 - repeat) * base["any"], abs=0.015)
        # distance d: the first expert survives d steps with probability repeat**d
        curve = res["locality_distance"]["all"][layer]["first"]
        for d in (1, 2, 3):
            assert curve[d - 1] == pytest.approx(repeat**d + (1 - repeat**d) / E, abs=0.012)
    assert res["locality_pairs"]["all"] == 2 * 150 * 99


@pytest.mark.parametrize("max_distance,stride,rows", [(1, 1, 1000), (5, 1, 7), (6, 3, 11), (4, 2, 1)])
def test_pair_counter_matches_per_token_loop(max_distance, stride, rows):
    rng = np.random.default_rng(max_distance * 10 + stride)
    E, k, L = 6, 2, 3
    lengths = [1, 5, 9, 1, 13, 2, 8]
    experts = random_experts(sum(lengths), L, E, k, rng)
    experts[1:, :, 0] = np.where(rng.random((len(experts) - 1, L)) < 0.4, experts[:-1, :, 0], experts[1:, :, 0])
    chunk = make_chunk(lengths, experts)
    counter = PairCounter(1, L, max_distance=max_distance, stride=stride)
    _feed(counter, chunk, E, rows)  # small `rows`: documents straddle chunk boundaries
    first, any_, pairs = counter.shares()
    for d in range(1, max_distance + 1):
        b_first, b_any, b_pairs = brute_locality(chunk, d, stride)
        assert pairs[0, d - 1] == b_pairs
        if b_pairs:
            np.testing.assert_allclose(first[0, :, d - 1], b_first)
            np.testing.assert_allclose(any_[0, :, d - 1], b_any)


def test_permuted_baseline_matches_its_expectation_and_keeps_each_document():
    # Under a uniform shuffle of a document with first-expert counts c_e over n tokens, the expected
    # number of equal consecutive pairs is sum_e c_e (c_e - 1) / n.
    rng = np.random.default_rng(5)
    E, L = 4, 1
    lengths = rng.integers(2, 30, size=400)
    experts = random_experts(int(lengths.sum()), L, E, 1, rng)
    # unbalanced and document-dependent load: each document prefers one expert
    pref = np.repeat(rng.integers(0, E, size=len(lengths)), lengths)
    experts[:, 0, 0] = np.where(rng.random(len(pref)) < 0.6, pref, experts[:, 0, 0])
    chunk = make_chunk(lengths, experts)
    expected_hits, pairs = 0.0, 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, n in zip(starts, lengths):
        c = np.bincount(experts[s : s + n, 0, 0], minlength=E)
        expected_hits += (c * (c - 1)).sum() / n
        pairs += n - 1
    perm = PermutedCounter(1, L, seed=0)
    for lo in range(0, len(chunk), 97):
        sl = slice(lo, lo + 97)
        perm.update(*layer_major(chunk.experts[sl], E), chunk.doc_id[sl], chunk.domain[sl])
    perm.finish()
    first, any_, got_pairs = perm.counter.shares()
    assert got_pairs[0, 0] == pairs
    assert first[0, 0, 0] == pytest.approx(expected_hits / pairs, abs=0.02)
    assert any_[0, 0, 0] == first[0, 0, 0]  # k = 1


def test_permuted_baseline_equals_random_for_uniform_load_and_exceeds_it_for_unbalanced_load(tmp_path):
    E = 8
    uniform = SyntheticSpec(num_docs=60, doc_len=1000, layers=(0,), num_experts=E, top_k=2, repeat=0.4, seed=1)
    res = analyze(write_synthetic_trace(tmp_path / "u", uniform), bootstrap=0, progress=False, max_distance=1)
    base = random_baseline(E, 2)
    perm = res["locality_permuted"]["all"]["0"]
    assert perm["first"] == pytest.approx(base["first"], abs=0.01)
    assert perm["any"] == pytest.approx(base["any"], abs=0.012)
    assert res["locality"]["all"]["0"]["first"] > perm["first"] + 0.3  # real locality stands out

    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0])
    skewed = SyntheticSpec(
        num_docs=60,
        doc_len=500,
        layers=(0,),
        num_experts=E,
        top_k=2,
        repeat=0.0,
        domains=("a",),
        first_dist={"a": p},
        seed=2,
    )
    res = analyze(write_synthetic_trace(tmp_path / "s", skewed), bootstrap=0, progress=False, max_distance=1)
    perm = res["locality_permuted"]["all"]["0"]
    # No locality planted (repeat 0): the real and permuted values agree, both at sum p^2, far above 1/E.
    assert perm["first"] == pytest.approx((p**2).sum(), abs=0.01)
    assert res["locality"]["all"]["0"]["first"] == pytest.approx(perm["first"], abs=0.01)
    assert perm["first"] > base["first"] + 0.15


def test_one_token_documents_have_no_pairs(tmp_path):
    rng = np.random.default_rng(0)
    chunk = generate(SyntheticSpec(num_docs=30, doc_len=1, layers=(2,), num_experts=8, top_k=2), 0, 0, rng)
    counter = PairCounter(1, 1, max_distance=3)
    _feed(counter, chunk, 8, 4)
    first, any_, pairs = counter.shares()
    assert pairs.sum() == 0 and np.isnan(first).all() and np.isnan(any_).all()


# -- issue 12: intervals over documents, the permuted control's spread, window boundaries ------
def test_locality_intervals_cover_the_planted_value_and_contain_the_estimate(tmp_path):
    """stay = 0.3 of E = 8: P(same first expert) = 0.3 + 0.7/8 = 0.3875 exactly; 30 traces of 40
    documents, 95% intervals: coverage near 95% (at least 80% allows for chance: 30 draws)."""
    from tests.analysis.planted import markov_first, write_trace

    truth, covered, widths = 0.3 + 0.7 / 8, 0, []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(5, 60, 40)
        chunk = make_chunk(lengths, markov_first(lengths, 8, 0.3, rng))
        res = analyze(
            write_trace(tmp_path / f"t{seed}", chunk, E=8, layers=[0]),
            bootstrap=300,
            seed=seed,
            progress=False,
            max_distance=1,
            locality_permutations=20,
        )
        point, ci = res["locality"]["all"]["0"]["first"], res["locality_ci"]["all"]["0"]["first"]
        assert ci["low"] <= point <= ci["high"]  # a percentile interval contains its estimate
        assert ci == res["locality_ci"]["a"]["0"]["first"]  # one domain: pooled = the domain
        covered += ci["low"] <= truth <= ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert covered >= 24, covered
    assert 0.03 < np.mean(widths) < 0.1  # ~1,300 pairs: binomial 95% width 2 x 1.96 x sqrt(.39 x .61 / 1300) = 0.053


def test_permuted_control_has_a_spread_and_real_minus_permuted_an_interval(tmp_path):
    from tests.analysis.planted import markov_first, write_trace

    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 80, 60)
    planted = make_chunk(lengths, markov_first(lengths, 8, 0.5, rng))
    none = make_chunk(lengths, markov_first(lengths, 8, 0.0, rng))  # no locality: real ~ permuted
    excess = {}
    for name, chunk in (("planted", planted), ("none", none)):
        res = analyze(
            write_trace(tmp_path / name, chunk, E=8, layers=[0]), bootstrap=300, progress=False, max_distance=1
        )
        assert res["meta"]["params"]["locality_permutations"] == 20
        sd = res["locality_permuted_sd"]["all"]["0"]["first"]
        assert 0 < sd < 0.02  # 20 permutations differ, a little
        excess[name] = res["locality_excess"]["all"]["0"]
        real, perm = res["locality"]["all"]["0"]["first"], res["locality_permuted"]["all"]["0"]["first"]
        assert excess[name]["first"] == pytest.approx(real - perm)
    ci = excess["planted"]["first_ci"]
    assert 0.3 < ci["low"] <= excess["planted"]["first"] <= ci["high"]  # planted: 0.5 x (1 - 1/8) = 0.44 above
    ci = excess["none"]["first_ci"]
    assert ci["low"] < 0 < ci["high"]  # nothing planted: zero inside the interval


def test_pairs_straddling_a_window_are_left_out_unless_kept(tmp_path):
    """Within each 8-token window the first expert never changes; each window starts fresh (the
    model saw none of the previous one). Excluding straddling pairs gives exactly 1.0."""
    from tests.analysis.planted import markov_first, write_trace

    rng = np.random.default_rng(0)
    lengths = np.full(50, 40)
    chunk = make_chunk(lengths, markov_first(lengths, 8, 1.0, rng, reset_every=8))
    path = write_trace(tmp_path / "w", chunk, E=8, layers=[0], seq_len=8, shard_rows=333)
    res = analyze(path, bootstrap=0, progress=False, max_distance=2, rows=97)
    assert res["meta"]["params"]["window"] == 8
    assert res["locality"]["all"]["0"]["first"] == 1.0
    assert res["locality_pairs"]["all"] == 50 * (39 - 4) and res["locality_straddling"]["all"] == 50 * 4
    assert res["locality_distance"]["all"]["0"]["first"][1] == 1.0  # d = 2 pairs across a boundary left out too
    kept = analyze(path, bootstrap=0, progress=False, max_distance=2, keep_straddling=True)
    assert kept["locality_pairs"]["all"] == 50 * 39 and kept["locality_straddling"]["all"] == 0
    assert kept["locality"]["all"]["0"]["first"] < 1.0 - 0.05  # 4 of 39 pairs are a fresh draw: ~1/8 equal
    assert kept["meta"]["params"]["window"] == 0 and kept["meta"]["params"]["keep_straddling"]
