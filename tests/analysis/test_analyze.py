"""`analyze` end to end: the JSON contract, chunking invariance and the edge cases (one-token
documents, k = 1, E = 256 and 300, non-contiguous layers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routelens import RoutelensError
from routelens.analysis import analyze, random_baseline, write_json
from routelens.synthetic import SyntheticSpec, write_synthetic_trace
from tests.analysis.planted import (
    brute_coactivation,
    brute_locality,
    make_chunk,
    random_experts,
    write_trace,
)

REQUIRED = ("meta", "distribution", "locality", "locality_baseline", "locality_permuted", "vocabulary", "coactivation")
DETERMINISTIC = (
    "distribution",
    "distribution_choice",
    "domain_distance",
    "locality",
    "locality_pairs",
    "locality_distance",
    "vocabulary",
    "vocabulary_next",
    "vocabulary_tokens",
    "coactivation",
    "confidence",
)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    spec = SyntheticSpec(
        num_docs=30,
        doc_len=(1, 40),
        layers=(0, 3, 7),
        num_experts=8,
        top_k=2,
        domains=("web", "code"),
        repeat=0.3,
        seed=7,
    )
    return write_synthetic_trace(tmp_path_factory.mktemp("t") / "trace", spec)


def test_result_follows_the_documented_schema(small_trace, tmp_path):
    res = analyze(small_trace, bootstrap=20, progress=False, max_distance=8)
    assert all(key in res for key in REQUIRED)
    meta = res["meta"]
    assert meta["layers"] == [0, 3, 7] and meta["domains"] == ["web", "code"]
    assert (
        meta["tokens"] == meta["tokens_per_domain"]["all"] == sum(meta["tokens_per_domain"][d] for d in ("web", "code"))
    )
    assert meta["model"]["name_or_path"] == "synthetic"
    for section in ("distribution", "locality", "locality_permuted", "locality_distance"):
        assert list(res[section]) == ["web", "code", "all"]
        assert all(list(v) == ["0", "3", "7"] for v in res[section].values())
    assert list(res["vocabulary"]) == list(res["coactivation"]) == ["0", "3", "7"]
    assert np.array(res["coactivation"]["3"]).shape == (8, 8)
    assert len(res["locality_distance"]["all"]["0"]["first"]) == 8
    assert res["locality_baseline"] == random_baseline(8, 2)
    assert set(res["confidence"]["0"]) == {"top1_weight"}  # weights stored, probs not
    out = write_json(res, tmp_path / "sub" / "analysis.json")
    assert json.loads(out.read_text()) == res  # JSON-ready: no NaN, no numpy types
    assert [p.name for p in out.parent.iterdir()] == ["analysis.json"]  # no temporary left


def test_chunk_size_does_not_change_the_result(small_trace):
    # rows=5: most documents straddle chunk boundaries
    a = analyze(small_trace, bootstrap=10, progress=False, max_distance=4, rows=5)
    b = analyze(small_trace, bootstrap=10, progress=False, max_distance=4, rows=1 << 16)
    for key in DETERMINISTIC:
        assert _close(a[key], b[key]), key


def _close(a, b) -> bool:
    """Nested JSON values equal, floats up to rounding."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def test_full_pass_matches_brute_force(small_trace):
    from routelens import open_trace

    res = analyze(small_trace, bootstrap=0, progress=False, max_distance=2, rows=64)
    whole = open_trace(small_trace).load()
    first, any_, pairs = brute_locality(whole)
    assert res["locality_pairs"]["all"] == pairs
    assert [res["locality"]["all"][n]["first"] for n in ("0", "3", "7")] == pytest.approx(first)
    assert [res["locality"]["all"][n]["any"] for n in ("0", "3", "7")] == pytest.approx(any_)
    want = brute_coactivation(whole.experts, 8)
    for i, name in enumerate(("0", "3", "7")):
        np.testing.assert_allclose(res["coactivation"][name], want[i])


def test_one_token_documents(tmp_path):
    spec = SyntheticSpec(num_docs=20, doc_len=1, layers=(1,), num_experts=8, top_k=2, seed=0)
    res = analyze(write_synthetic_trace(tmp_path / "t", spec), bootstrap=20, progress=False, rows=3)
    assert res["locality_pairs"]["all"] == 0
    assert res["locality"]["a"]["1"] == {"first": None, "any": None}
    assert res["locality_permuted"]["all"]["1"] == {"first": None, "any": None}
    assert res["locality_distance"]["all"]["1"]["first"] == [None] * 64
    assert sum(res["distribution"]["a"]["1"]) == pytest.approx(1.0)


def test_top1_routing(tmp_path):
    spec = SyntheticSpec(num_docs=40, doc_len=50, layers=(0, 1), num_experts=4, top_k=1, repeat=0.5, seed=1)
    res = analyze(write_synthetic_trace(tmp_path / "t", spec), bootstrap=0, progress=False)
    cell = res["locality"]["all"]["0"]
    assert cell["first"] == cell["any"] == pytest.approx(0.5 + 0.5 / 4, abs=0.03)
    assert res["distribution_choice"]["a"]["0"]["second"] is None
    assert res["locality_baseline"] == {"first": 0.25, "any": 0.25}
    assert not np.array(res["coactivation"]["1"]).any()


@pytest.mark.parametrize("E", [256, 300])
def test_many_experts_and_noncontiguous_layers(tmp_path, E):
    rng = np.random.default_rng(E)
    lengths = [30] * 40
    experts = random_experts(sum(lengths), 3, E, 4, rng)
    experts[:, 2, 0] = E - 1  # the largest id (255 in uint8, 299 in uint16) on one layer
    assert experts.dtype == (np.uint8 if E == 256 else np.uint16)
    chunk = make_chunk(lengths, experts, token_id=rng.integers(0, 50, sum(lengths)))
    res = analyze(write_trace(tmp_path / "t", chunk, E=E, layers=(0, 3, 7)), bootstrap=0, progress=False, rows=77)
    assert list(res["locality"]["all"]) == ["0", "3", "7"]
    assert res["locality"]["all"]["7"]["first"] == 1.0 and res["locality"]["all"]["7"]["any"] == 1.0
    assert res["distribution_choice"]["a"]["7"]["first"][E - 1] == 1.0
    assert res["locality"]["all"]["0"]["any"] == pytest.approx(random_baseline(E, 4)["any"], abs=0.03)
    assert len(res["coactivation"]["3"]) == E


def test_bad_input_names_the_value(small_trace, tmp_path):
    with pytest.raises(RoutelensError, match="min_count=0"):
        analyze(small_trace, min_count=0, progress=False)
    with pytest.raises(RoutelensError, match="bootstrap=-1"):
        analyze(small_trace, bootstrap=-1, progress=False)
    with pytest.raises(RoutelensError, match="no routelens trace"):
        analyze(tmp_path / "missing", progress=False)
    spec = SyntheticSpec(num_docs=2, doc_len=4, layers=(0,), domains=("all",))
    with pytest.raises(RoutelensError, match="named 'all'"):
        analyze(write_synthetic_trace(tmp_path / "t", spec), progress=False)
    with pytest.raises(RoutelensError, match="is a directory"):
        write_json({}, tmp_path)


def test_config_and_overrides_build_the_same_analysis(small_trace):
    from routelens.analysis import AnalyzeConfig

    config = AnalyzeConfig(bootstrap=0, max_distance=2, progress=False)
    by_config = analyze(small_trace, config)
    by_override = analyze(small_trace, AnalyzeConfig(bootstrap=7), bootstrap=0, max_distance=2, progress=False)
    assert by_config["meta"]["params"] == by_override["meta"]["params"]
    assert by_config["meta"]["params"]["max_distance"] == 2 and config.bootstrap == 0
    assert by_config["locality"] == by_override["locality"]


def test_unknown_override_names_it_and_the_valid_ones(small_trace):
    with pytest.raises(
        RoutelensError, match=r"unknown option 'max_distnace' for AnalyzeConfig; valid options are .*max_distance"
    ):
        analyze(small_trace, max_distnace=3)
    with pytest.raises(RoutelensError, match="config must be of type AnalyzeConfig, not dict"):
        analyze(small_trace, {"bootstrap": 0})


def test_read_ahead_keeps_the_order_and_raises_the_readers_error():
    from routelens.analysis.analyze import read_ahead

    assert list(read_ahead(iter(range(5)))) == [0, 1, 2, 3, 4]

    def broken():
        yield 1
        raise OSError("damaged shard")

    got = read_ahead(broken())
    assert next(got) == 1
    with pytest.raises(OSError, match="damaged shard"):
        next(got)


def test_bad_locality_null_names_the_value_and_the_choices(small_trace):
    with pytest.raises(RoutelensError, match="locality_null='sampled'.*exact, shuffled"):
        analyze(small_trace, locality_null="sampled", progress=False)
