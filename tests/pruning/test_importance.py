"""Expert importance on a planted trace: frequency, weighted and reap equal their closed forms,
overall and per domain; empty slots are not assignments; reap needs the expert_norms column."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.errors import RoutelensError
from routelens.pruning import Criterion, expert_importance
from routelens.pruning.checkpoint import choose_experts
from routelens.pruning.importance import importance_sums, scores_of
from tests.pruning.planted import write_planted


def test_importance_of_a_planted_trace_is_its_closed_form(tmp_path):
    result = expert_importance(write_planted(tmp_path / "t"), progress=False)
    overall, a, b = result["overall"], result["domains"]["a"], result["domains"]["b"]
    assert result["meta"]["criteria"] == ["frequency", "weighted", "reap"] and result["meta"]["layers"] == ["1", "3"]
    # layer 1: 7 assignments (token 3's second slot is empty): expert 0 three times, 1 and 2 once, 3 twice
    assert overall["assignments"]["1"] == [3, 1, 1, 2]
    np.testing.assert_allclose(overall["frequency"]["1"], np.array([3, 1, 1, 2]) / 7, atol=1e-6)
    np.testing.assert_allclose(
        overall["weighted"]["1"], np.array([0.75 + 0.5 + 0.5, 0.25, 0.5, 1.0 + 0.5]) / 7, atol=1e-6
    )
    np.testing.assert_allclose(
        overall["reap"]["1"], [(0.75 * 2 + 0.5 * 1 + 0.5 * 6) / 3, 0.25 * 4, 0.5 * 2, (3 + 0.5) / 2], atol=1e-6
    )
    np.testing.assert_allclose(a["frequency"]["1"], [0.5, 0.25, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(a["reap"]["1"], [1.0, 1.0, 1.0, 0.0], atol=1e-6)  # an expert no token chose: 0
    np.testing.assert_allclose(b["weighted"]["1"], [0.5 / 3, 0.0, 0.0, 1.5 / 3], atol=1e-6)
    np.testing.assert_allclose(overall["frequency"]["3"], [0.0, 0.5, 0.5, 0.0], atol=1e-6)
    assert a["tokens"] == 2 and b["tokens"] == 2 and overall["tokens"] == 4
    # frequency sums to 1 per layer and domain; weighted to the mean total weight per assignment
    for block in (overall, a, b):
        assert all(abs(sum(v) - 1) < 1e-6 for v in block["frequency"].values())


def test_without_expert_norms_there_is_no_reap(tmp_path):
    result = expert_importance(write_planted(tmp_path / "t", norms=False), progress=False)
    assert result["meta"]["criteria"] == ["frequency", "weighted"] and "reap" not in result["overall"]
    with pytest.raises(RoutelensError, match="--store-expert-norms"):
        scores_of(result, Criterion.REAP)
    with pytest.raises(RoutelensError, match="not a domain"):
        scores_of(result, Criterion.FREQUENCY, "c")
    np.testing.assert_allclose(scores_of(result, Criterion.FREQUENCY, "a")[0], [0.5, 0.25, 0.25, 0.0], atol=1e-6)


def test_sums_of_chunks_add_up_to_the_sums_of_their_union():
    rng = np.random.default_rng(0)
    experts = rng.integers(0, 6, size=(50, 3, 2)).astype(np.uint8)  # id 5: outside E = 5
    weights, norms, domain = rng.random((50, 3, 2)), rng.random((50, 3, 2)), rng.integers(0, 2, 50)
    whole = importance_sums(experts, domain, 5, 2, weights, norms)
    parts = importance_sums(experts[:20], domain[:20], 5, 2, weights[:20], norms[:20])
    parts += importance_sums(experts[20:], domain[20:], 5, 2, weights[20:], norms[20:])
    assert np.array_equal(whole.counts, parts.counts) and np.allclose(whole.reap, parts.reap)
    assert whole.counts.sum() == int((experts < 5).sum()) and whole.tokens.tolist() == np.bincount(domain).tolist()


def test_choose_experts_keeps_the_best_and_respects_groups():
    scores = np.array([0.1, 0.9, 0.3, 0.3, 0.8, 0.0, 0.7, 0.2])
    assert choose_experts(scores, 3) == [1, 4, 6]
    assert choose_experts(scores, 2) == [1, 4]
    assert choose_experts(np.zeros(4), 2) == [0, 1]  # ties: the lower id
    assert choose_experts(scores, 4, groups=2) == [1, 2, 4, 6]  # best two of 0..3 and of 4..7
    with pytest.raises(RoutelensError, match="multiple of 2"):
        choose_experts(scores, 3, groups=2)
