"""One vocabulary (docs/glossary.md): `num_experts` is the routed experts E, `num_ids` = E + Z spans
every id. Renaming the words changed no number: a trace whose ids 6 and 7 are zero-computation
experts (E = 6, Z = 2) gives, key by key, the results of the same rows read as E = 8 routed
experts, except the two meta keys that say which is which."""

from __future__ import annotations

import json
import math

import pytest

from routelens.analysis import analyze
from routelens.report.build import check_analysis
from routelens.report.inputs import check_result_meta
from routelens.simulate import simulate_balance, simulate_cache, simulate_distinct
from routelens.store import meta_num_experts, open_trace
from routelens.synthetic import SyntheticSpec, write_synthetic_trace

SPEC = dict(num_docs=6, doc_len=(20, 40), layers=(0, 2, 3), top_k=2, repeat=0.4, seed=5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    zero = open_trace(write_synthetic_trace(root / "zero", SyntheticSpec(num_experts=6, num_zero_experts=2, **SPEC)))
    plain = open_trace(write_synthetic_trace(root / "plain", SyntheticSpec(num_experts=8, **SPEC)))
    return zero, plain


def test_the_pair_holds_the_same_rows(pair):
    zero, plain = pair
    assert (zero.num_experts, zero.num_zero_experts, zero.num_ids) == (6, 2, 8)
    assert (plain.num_experts, plain.num_zero_experts, plain.num_ids) == (8, 0, 8)
    a, b = zero.load(), plain.load()
    assert (a.experts == b.experts).all() and (a.doc_id == b.doc_id).all() and a.experts.max() >= 6


def same(a, b, path="") -> list[str]:
    """The key paths where `a` and `b` differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only on one side" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += same(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def differences(run, zero, plain, meta_key) -> list[str]:
    x, y = json.loads(json.dumps(run(zero))), json.loads(json.dumps(run(plain)))
    for side, trace in ((x, zero), (y, plain)):
        meta = side[meta_key]
        assert meta["num_experts"] == trace.num_experts  # E, as the manifest says
        if "num_ids" in meta:
            assert meta["num_ids"] == trace.num_ids
        meta.pop("num_experts"), meta.pop("num_zero_experts", None), meta.pop("trace", None)  # the folder's name
    return same(x, y)


@pytest.mark.parametrize(
    "name, run, meta_key",
    [
        ("analyze", lambda tr: analyze(tr, progress=False, bootstrap=20, seed=3), "meta"),
        ("cache", lambda tr: simulate_cache(tr, capacities=(2, 4), progress=False), "cache_meta"),
        ("distinct", lambda tr: simulate_distinct(tr), "distinct_meta"),
        ("balance", lambda tr: simulate_balance(tr), "balance_meta"),
    ],
)
def test_every_number_is_unchanged_by_the_words(pair, name, run, meta_key):
    zero, plain = pair
    assert differences(run, zero, plain, meta_key) == [], name


def test_a_result_written_before_num_ids_is_still_read_for_its_trace(pair):
    zero, plain = pair
    old = {"meta": {"num_experts": zero.num_ids, "top_k": 2, "layers": [0, 2, 3]}}  # E + Z, no num_ids
    assert meta_num_experts(old["meta"], zero) == 6 and meta_num_experts(old["meta"], plain) == 8
    check_analysis(zero, old)  # accepted: read as E + Z
    new = {"meta": {"num_experts": 8, "num_ids": 10, "top_k": 2, "layers": [0, 2, 3]}}  # another model's E
    with pytest.raises(Exception, match="num_experts=8 but the trace"):
        check_analysis(zero, new)
    payload = {"cache": {}, "cache_meta": {"num_experts": 8, "top_k": 2, "tokens": zero.num_tokens}}
    check_result_meta(payload, "cache", zero.path, "--cache", zero)  # an older simulator's E + Z
