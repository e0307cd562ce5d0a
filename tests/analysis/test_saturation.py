"""Router saturation on planted checkpoints whose agreement with the final one is known."""

from __future__ import annotations

import numpy as np
import pytest

from routelens import RoutelensError
from routelens.analysis import router_saturation
from routelens.store.reader import TraceChunk
from tests.analysis.planted import make_chunk, random_experts, write_trace

E, K, L = 8, 2, 2
LENGTHS = [50] * 40


def _final(rng):
    return make_chunk(LENGTHS, random_experts(sum(LENGTHS), L, E, K, rng))


def test_identical_and_disjoint_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    final = _final(rng)
    other = final.experts.copy()
    other[:, 1] = (other[:, 1] + 1) % E  # layer 1 shifted by one: first choice never agrees
    half = other.copy()
    flip = rng.random(len(final)) < 0.3
    half[flip, 0] = random_experts(int(flip.sum()), 1, E, K, rng)[:, 0]
    paths = [
        write_trace(tmp_path / "c0", TraceChunk(**{**vars(final), "experts": half}), E=E, layers=(1, 4)),
        write_trace(tmp_path / "c1", final, E=E, layers=(1, 4), shard_rows=333),
        write_trace(tmp_path / "final", final, E=E, layers=(1, 4)),
    ]
    res = router_saturation(paths, progress=False, rows=256)
    assert res["checkpoints"] == ["c0", "c1", "final"] and res["layers"] == [1, 4]
    assert res["tokens"] == [len(final)] * 3
    assert res["topk"]["1"][1:] == [1.0, 1.0] and res["top1"]["4"][1:] == [1.0, 1.0]
    # layer 1 of c0: 30% of rows re-drawn; a fresh uniform pair keeps on average k^2/E of k experts
    overlap = (half[:, 0, :, None] == final.experts[:, 0, None, :]).any(-1).mean()
    assert res["topk"]["1"][0] == pytest.approx(overlap)
    assert res["topk"]["1"][0] == pytest.approx(0.7 + 0.3 * K / E, abs=0.03)
    assert res["top1"]["4"][0] == 0.0  # every first choice shifted
    assert res["baseline"] == {"topk": K / E, "top1": 1 / E}


def test_rows_are_aligned_by_document_and_position(tmp_path):
    rng = np.random.default_rng(1)
    final = _final(rng)
    order = np.concatenate([np.arange(1000, 2000), np.arange(0, 1000)])  # other document order
    keep = order[::2]  # and only half of the rows
    subset = TraceChunk(**{f: v[keep] for f, v in vars(final).items() if v is not None})
    paths = [
        write_trace(tmp_path / "c0", subset, E=E, layers=(0, 1)),
        write_trace(tmp_path / "f", final, E=E, layers=(0, 1)),
    ]
    res = router_saturation(paths, labels=["early", "final"], progress=False)
    assert res["tokens"][0] == len(keep) and res["checkpoints"] == ["early", "final"]
    assert res["topk"]["0"] == [1.0, 1.0] and res["top1"]["1"] == [1.0, 1.0]


def test_saturation_refuses_mismatched_checkpoints(tmp_path):
    rng = np.random.default_rng(2)
    final = _final(rng)
    a = write_trace(tmp_path / "a", final, E=E, layers=(0, 1))
    b = write_trace(tmp_path / "b", make_chunk([3], random_experts(3, L, 9, K, rng)), E=9, layers=(0, 1))
    with pytest.raises(RoutelensError, match="num_experts=9"):
        router_saturation([b, a], progress=False)
    with pytest.raises(RoutelensError, match="at least 2"):
        router_saturation([a], progress=False)
    moved = make_chunk([5], random_experts(5, L, E, K, rng), first_doc=10_000)
    with pytest.raises(RoutelensError, match="no row"):
        router_saturation([write_trace(tmp_path / "m", moved, E=E, layers=(0, 1)), a], progress=False)


# -- issue 12: the same text on every aligned row; a load-matched chance line ------------------
def test_traces_of_different_text_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 100, sum(LENGTHS)).astype(np.int32)
    final = make_chunk(LENGTHS, random_experts(sum(LENGTHS), L, E, K, rng), token_id=tokens)
    other = tokens.copy()
    other[777] = (other[777] + 1) % 100  # one token differs
    ckpt = TraceChunk(**{**vars(final), "token_id": other})
    paths = [
        write_trace(tmp_path / "c", ckpt, E=E, layers=(0, 1)),
        write_trace(tmp_path / "f", final, E=E, layers=(0, 1)),
    ]
    with pytest.raises(RoutelensError, match=r"different tokens at doc_id 15, position 27 .*same corpus"):
        router_saturation(paths, progress=False, rows=300)
    same = [write_trace(tmp_path / "c2", final, E=E, layers=(0, 1)), paths[1]]
    assert router_saturation(same, progress=False)["topk"]["0"] == [1.0, 1.0]


def test_load_matched_chance_line_explains_agreement_of_independent_skewed_routers(tmp_path):
    """Two independent routers that both send most tokens to experts 0 and 1 agree far above
    k/E by load alone; the load-matched line is where they sit."""
    rng = np.random.default_rng(4)
    n = sum(LENGTHS)
    p = np.array([0.4, 0.3] + [0.05] * 6)

    def skewed():
        out = np.empty((n, L, K), np.uint8)
        for layer in range(L):
            for i in range(n):
                out[i, layer] = rng.choice(E, size=K, replace=False, p=p)
        return out

    final = make_chunk(LENGTHS, skewed())
    ckpt = TraceChunk(**{**vars(final), "experts": skewed()})
    paths = [
        write_trace(tmp_path / "c", ckpt, E=E, layers=(0, 1)),
        write_trace(tmp_path / "f", final, E=E, layers=(0, 1)),
    ]
    res = router_saturation(paths, progress=False)
    for layer in ("0", "1"):
        got, chance = res["topk"][layer][0], res["baseline_matched"]["topk"][layer][0]
        assert got > res["baseline"]["topk"] + 0.15  # far above k/E = 0.25 ...
        assert got == pytest.approx(chance, abs=0.02)  # ... and at the load-matched line
        assert res["top1"][layer][0] == pytest.approx(res["baseline_matched"]["top1"][layer][0], abs=0.02)
    # The final against itself: its own loads, sum_e q_e^2 (x k for the top-k share).
    assert res["baseline_matched"]["top1"]["0"][1] > 0.2
