"""Out-of-core simulation: layer streams spilled to disk in trace, per-document and shuffled order,
next-use indices from a backward pass in blocks, block-wise replays equal to the reference, and
the shuffled batches of the balance simulator drawn without storing a permutation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from routelens import open_trace
from routelens.simulate import simulate_balance, simulate_cache
from routelens.simulate import spill as spill_mod
from routelens.simulate.balance import ShuffledBatches
from routelens.simulate.cache_kernels import next_use_indices
from routelens.simulate.reference import replay_reference
from routelens.simulate.spill import next_use_file, read_next_use, spill_layers


@pytest.fixture
def routed(planted):
    """1,000 tokens, 3 layers, top-2 of 8, documents of 50..150 tokens; written in 1 and in 4 shards."""
    rng = np.random.default_rng(5)
    lengths = [50, 150, 100, 120, 80, 100, 60, 140, 110, 90]
    x = np.argsort(rng.random((1000, 3, 8)), axis=-1)[..., :2].astype(np.uint8)
    x[1::2, 0] = x[0::2, 0]  # some locality in layer 0
    return x, lengths, planted(x, lengths, 8), planted(x, lengths, 8, shards=4)


def rows_of(spilled):
    """(tokens, layers, k) from the spilled files."""
    return np.stack([spilled.load(i)[0] for i in range(len(spilled.layers))], axis=1)


def test_trace_order_spill_is_the_trace(routed, tmp_path):
    x, lengths, one, _ = routed
    spilled = spill_layers(open_trace(one), tmp_path / "s", rows=97)
    assert np.array_equal(rows_of(spilled), x)
    starts = spilled.load(0)[1]
    assert np.flatnonzero(starts).tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    forward = list(spilled.blocks(1, 300))
    backward = list(spilled.blocks(1, 300, reverse=True))
    assert [lo for lo, _, _ in forward] == [0, 300, 600, 900] and [lo for lo, _, _ in backward] == [900, 600, 300, 0]
    assert np.array_equal(np.concatenate([e for _, e, _ in forward]), x[:, 1])


def test_shuffled_spill_is_one_permutation_shared_by_layers(routed, tmp_path):
    x, _, one, four = routed
    a = rows_of(spill_layers(open_trace(one), tmp_path / "a", order="shuffled", seed=3, bucket_rows=128))
    b = rows_of(spill_layers(open_trace(four), tmp_path / "b", order="shuffled", seed=3, rows=77, bucket_rows=128))
    c = rows_of(spill_layers(open_trace(one), tmp_path / "c", order="shuffled", seed=4, bucket_rows=128))
    assert np.array_equal(a, b)  # the seed decides, not shards or chunks
    assert not np.array_equal(a, c) and not np.array_equal(a, x)

    def as_rows(y):
        return Counter(map(bytes, y.reshape(len(y), -1)))  # whole tokens, all layers together

    assert as_rows(a) == as_rows(x) == as_rows(c)
    spilled = spill_layers(open_trace(one), tmp_path / "d", order="shuffled", seed=3)
    assert np.flatnonzero(spilled.load(0)[1]).tolist() == [0]  # only token 0 starts a segment


def test_document_shuffle_keeps_each_document_in_place(routed, tmp_path):
    x, lengths, one, four = routed
    a = spill_layers(open_trace(one), tmp_path / "a", order="documents", seed=1)
    b = spill_layers(open_trace(four), tmp_path / "b", order="documents", seed=1, rows=33)
    ya = rows_of(a)
    assert np.array_equal(ya, rows_of(b)) and not np.array_equal(ya, x)
    assert np.array_equal(a.load(0)[1], spill_layers(open_trace(one), tmp_path / "t").load(0)[1])
    for lo, hi in zip(np.cumsum([0, *lengths[:-1]]), np.cumsum(lengths)):
        assert sorted(map(bytes, ya[lo:hi].reshape(hi - lo, -1))) == sorted(map(bytes, x[lo:hi].reshape(hi - lo, -1)))


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("reset", [False, True])
def test_next_use_file_in_blocks_equals_the_whole_stream(routed, tmp_path, monkeypatch, reset, wide):
    if wide:  # the int64 encoding of streams with 2^32 requests or more
        monkeypatch.setattr(spill_mod, "_next_use_dtype", lambda requests: np.dtype(np.int64))
    one = routed[2]
    spilled = spill_layers(open_trace(one), tmp_path / "s")
    for i in range(3):
        experts, starts = spilled.load(i)
        segment = starts.copy() if reset else np.eye(1, len(starts), dtype=bool)[0]
        want = next_use_indices(experts, segment)
        path = next_use_file(spilled, i, reset_per_document=reset, rows=128)
        got = np.concatenate([read_next_use(path, 1000, 2, lo, min(128, 1000 - lo)) for lo in range(0, 1000, 128)])
        assert np.array_equal(got, want)


def test_block_wise_replay_equals_the_reference(routed, monkeypatch):
    monkeypatch.setattr("routelens.simulate.cache.MIN_ROWS", 64)  # blocks of 64 tokens
    x, lengths, _, four = routed
    starts = np.zeros(1000, bool)
    starts[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = True
    for reset in (False, True):
        out = simulate_cache(four, capacities=(2, 3), reset_per_document=reset, memory_bytes=1)
        segment = starts if reset else np.eye(1, 1000, dtype=bool)[0]
        for policy in ("lru", "lfu", "belady", "prefetch"):
            for li in range(3):
                for c in (2, 3):
                    ref = replay_reference(x[:, li].tolist(), policy, c, segment.tolist())
                    assert out["cache"][policy][str(li)][str(c)] == ref["hits"] / 2000, (reset, policy, li, c)


def test_shuffled_batches_fill_every_batch_exactly():
    labels = ShuffledBatches(1000, 64, seed=2)
    drawn = np.concatenate([labels.take(n) for n in (1, 99, 300, 600)])
    assert np.bincount(drawn).tolist() == [64] * 15 + [40]
    again = ShuffledBatches(1000, 64, seed=2).take(1000)
    assert np.array_equal(drawn, again)  # the labels do not depend on how they are taken
    # Token 0 lands in each batch with probability size / tokens.
    hits = np.bincount([ShuffledBatches(100, 30, seed=s).take(1)[0] for s in range(4000)], minlength=4)
    np.testing.assert_allclose(hits / 4000, [0.3, 0.3, 0.3, 0.1], atol=0.03)


def test_balance_in_groups_of_batches_counts_the_same(routed):
    _, _, one, four = routed
    whole = simulate_balance(one, devices=4, batch_tokens=64, seed=1)
    groups = simulate_balance(four, devices=4, batch_tokens=64, seed=1, memory_bytes=1, rows=100)  # one batch per pass
    for key in ("balance_detail",):
        for placement, layers in whole[key].items():
            for layer, cfs in layers.items():
                for cf, metrics in cfs.items():
                    other = groups[key][placement][layer][cf]
                    assert other["dropped_assignments"] == metrics["dropped_assignments"]
                    for name, value in metrics.items():
                        assert other[name] == pytest.approx(value, rel=1e-12), (placement, layer, cf, name)
    for placement, cfs in whole["balance_shuffled"].items():
        for cf, metrics in cfs.items():
            assert groups["balance_shuffled"][placement][cf] == pytest.approx(metrics, rel=1e-12)
    assert groups["balance_meta"] == whole["balance_meta"]
