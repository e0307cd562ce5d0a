"""Expert-parallel load: closed-form tiny cases of every kernel, planted hot experts and planted
locality over traces, and the JSON contract."""

from __future__ import annotations

import numpy as np
import pytest

from routelens import RoutelensError
from routelens.simulate import simulate_balance
from routelens.simulate.balance import (
    balanced_placement,
    batch_counts,
    device_loads,
    dropped_assignments,
    expert_capacity,
    imbalance,
    round_robin_placement,
)


# -- kernels on tiny cases -----------------------------------------------------------------------
def test_batch_counts_by_hand():
    experts = np.array([[0, 1], [0, 2], [1, 2], [3, 0], [2, 3]])
    counts, sizes = batch_counts(experts, 4, 2)
    assert counts.tolist() == [[2, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 1]]
    assert sizes.tolist() == [2, 2, 1]
    # A shuffled order: token i goes to position order[i].
    counts, _ = batch_counts(experts, 4, 2, order=np.array([4, 3, 2, 1, 0]))
    # Batch 0 = tokens 4, 3; batch 1 = tokens 2, 1; batch 2 = token 0.
    assert counts.tolist() == [[1, 0, 1, 2], [1, 1, 2, 0], [1, 1, 0, 0]]


def test_expert_capacity_is_rounded_up_as_in_training():
    assert expert_capacity(np.array([4096]), 2, 8, 1.25).tolist() == [1280]
    assert expert_capacity(np.array([2, 3]), 2, 4, 1.5).tolist() == [2, 3]  # 1.5 -> 2, 2.25 -> 3
    assert expert_capacity(np.array([10]), 2, 8, 1.0).tolist() == [3]  # 2.5 -> 3
    assert expert_capacity(np.array([64, 10, 64]), 2, 8, 1.0).tolist() == [16, 3, 16]  # one value per batch


def test_drops_and_replicas_by_hand():
    counts = np.array([[2, 1, 1, 0], [1, 1, 1, 1], [4, 0, 0, 0]])
    capacity = np.array([1, 1, 1])
    assert dropped_assignments(counts, capacity, np.ones(4, np.int64)).tolist() == [1, 0, 3]
    # Two replicas of expert 0 share its capacity of 1 (shares 1 and 0) and its count (2+1, 1, 2+2):
    # batch 0: 1 - 1 = 0 and 1 - 0 = 1 dropped, plus expert 1's 0: 1; batch 2: (2 - 1) + (2 - 0) = 3.
    assert dropped_assignments(counts, capacity, np.array([2, 1, 1, 1])).tolist() == [1, 0, 3]
    # Three replicas of a count of 7 with capacity 5: shares 3 2 2 against 2 2 1 -> 1 + 0 + 1 = 2 = 7 - 5.
    assert dropped_assignments(np.array([[7]]), np.array([5]), np.array([3])).tolist() == [2]


def test_replicated_drops_equal_the_logical_experts_on_random_counts():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 40, (50, 6))
    capacity = rng.integers(0, 30, 50)
    replicas = rng.integers(1, 5, 6)
    logical = np.maximum(counts - capacity[:, None], 0).sum(axis=1)
    assert dropped_assignments(counts, capacity, replicas).tolist() == logical.tolist()


def test_device_loads_and_imbalance_by_hand():
    placement = round_robin_placement(4, 2)  # experts 0, 2 on device 0; 1, 3 on device 1
    assert placement.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    loads = device_loads(np.array([[2, 1, 1, 0], [1, 1, 1, 1]]), placement)
    assert loads.tolist() == [[3, 1], [2, 2]]
    assert imbalance(loads).tolist() == [1.5, 1.0]
    # A replicated expert's load splits evenly: expert 0 on both devices.
    split = np.array([[1, 1], [0, 1], [1, 0], [0, 1]])
    assert device_loads(np.array([[4, 0, 0, 0]]), split).tolist() == [[2.0, 2.0]]


def test_balanced_placement_by_hand():
    # Loads 10 1 1 1 on 2 devices with 2 spare slots: expert 0 gets 3 replicas (10 -> 5 -> 3.33 per replica,
    # always above 1). Packing by descending load, each onto the lightest open device, preferring one
    # without that expert: e0 -> d0, e0 -> d1, e0 -> d0 (tie), e1 -> d1, e2 -> d1, e3 -> d0 (d1 full).
    placement = balanced_placement(np.array([10.0, 1, 1, 1]), 2, 2)
    assert placement.tolist() == [[2, 1], [0, 1], [0, 1], [1, 0]]
    assert placement.sum() == 6 and placement.sum(axis=0).tolist() == [3, 3]


def test_balanced_placement_without_spare_slots_packs_by_load():
    placement = balanced_placement(np.array([8.0, 4, 3, 1]), 2, 0)
    # Two slots per device: 8 -> d0, 4 -> d1, 3 -> d1 (4 < 8), 1 -> d0 (d1 is full).
    assert placement.tolist() == [[1, 0], [0, 1], [0, 1], [1, 0]]


# -- over traces -----------------------------------------------------------------------------------
def hot_expert_experts(T, E=8):
    """Every token's first choice is expert 0; second choices cycle through 1..E-1 (no randomness)."""
    x = np.zeros((T, 1, 2), np.int64)
    x[:, 0, 1] = 1 + np.arange(T) % (E - 1)
    return x


def test_round_robin_with_a_planted_hot_expert(planted):
    # B=64, k=2, E=8, CF=1: capacity 16 per expert. Expert 0 gets all 64 tokens of a batch: 48 dropped of
    # 128 assignments; the others get 9 or 10 each (no drop). Device 0 holds expert 0: 64 / mean 16 = 4.
    path = planted(hot_expert_experts(640), [640], 8)
    out = simulate_balance(path, devices=8, batch_tokens=64, cfs=(1.0, 4.0), placements=("round_robin",))
    rr = out["balance"]["round_robin"]
    assert rr["1.0"]["dropped"] == pytest.approx(48 / 128)
    assert rr["1.0"]["imbalance_max_mean"] == pytest.approx(4.0)
    assert rr["4.0"]["dropped"] == 0.0  # capacity 64 holds even the hot expert
    assert out["balance_meta"]["capacity_per_expert"] == {"1.0": 16, "4.0": 64}


def test_balanced_placement_relieves_the_hot_expert(planted):
    path = planted(hot_expert_experts(640), [640], 8)
    out = simulate_balance(path, devices=8, batch_tokens=64, cfs=(1.0,))
    rr, bal = out["balance"]["round_robin"]["1.0"], out["balance"]["balanced"]["1.0"]
    # Replicas spread the hot expert's load over devices, but share its capacity: drops stay the same.
    assert bal["imbalance_max_mean"] < rr["imbalance_max_mean"]
    assert bal["dropped"] == rr["dropped"] == pytest.approx(48 / 128)
    replicas = out["balance_meta"]["balanced_replicas"]["0"]
    assert replicas[0] == max(replicas) > 1 and sum(replicas) == 8 + 8  # one spare slot per device
    assert out["balance_meta"]["expert_slots"] == {"round_robin": 8, "balanced": 16}


def test_uniform_routing_drops_alike_in_every_placement_at_equal_slots(planted):
    # Uniform random routing, no hot expert: the balanced placement still replicates (ties), and with
    # a full expert capacity per replica its drops used to fall to 0. Capacity per logical expert,
    # split among replicas: the same slots, the same drops, in both orders.
    rng = np.random.default_rng(11)
    x = np.argsort(rng.random((4096, 2, 8)), axis=-1)[..., :2]
    out = simulate_balance(planted(x, [4096], 8), devices=4, batch_tokens=64, cfs=(1.0, 1.25), redundant_experts=4)
    meta = out["balance_meta"]
    for cf in ("1.0", "1.25"):
        rr, bal = out["balance"]["round_robin"][cf], out["balance"]["balanced"][cf]
        assert bal["dropped"] == rr["dropped"]
        assert (
            out["balance_shuffled"]["balanced"][cf]["dropped"] == out["balance_shuffled"]["round_robin"][cf]["dropped"]
        )
        assert meta["slots"]["round_robin"][cf] == meta["slots"]["balanced"][cf] == 8 * meta["capacity_per_expert"][cf]
    assert out["balance"]["round_robin"]["1.0"]["dropped"] > 0.01  # uniform routing does drop at CF 1
    assert max(meta["balanced_replicas"]["0"]) > 1  # replicas were made


def test_uniform_routing_round_robin_is_perfectly_balanced(planted):
    # Token t uses experts (2t mod 8, 2t+1 mod 8): every batch of 8 tokens uses each expert exactly twice.
    t = np.arange(800)
    x = np.stack([(2 * t) % 8, (2 * t + 1) % 8], axis=-1)[:, None, :]
    out = simulate_balance(planted(x, [800], 8), devices=4, batch_tokens=8, cfs=(1.0,), placements=("round_robin",))
    assert out["balance"]["round_robin"]["1.0"] == {"dropped": 0.0, "imbalance_max_mean": 1.0}


def test_no_drop_when_capacity_covers_every_token(planted):
    rng = np.random.default_rng(0)
    x = np.argsort(rng.random((1000, 3, 8)), axis=-1)[..., :2]
    out = simulate_balance(planted(x, [500, 500], 8), devices=8, batch_tokens=100, cfs=(4.0,))  # capacity = B
    for placement in ("round_robin", "balanced"):
        assert out["balance"][placement]["4.0"]["dropped"] == 0.0
        assert out["balance_shuffled"][placement]["4.0"]["dropped"] == 0.0


def test_locality_over_subscribes_real_order_but_not_shuffled(planted):
    # 40 documents of 64 tokens; each document sends every token's first choice to its own expert.
    docs = np.repeat(np.arange(40), 64)
    x = np.stack([docs % 8, (docs + 1 + np.arange(len(docs)) % 7) % 8], axis=-1)[:, None, :]
    out = simulate_balance(
        planted(x, [64] * 40, 8), devices=8, batch_tokens=64, cfs=(1.0,), placements=("round_robin",)
    )
    real, shuf = out["balance"]["round_robin"]["1.0"], out["balance_shuffled"]["round_robin"]["1.0"]
    # Real order: each batch is one document, its expert gets 64 + (9 or 10) of capacity 16.
    assert real["dropped"] > 0.35
    assert shuf["dropped"] < 0.1 and shuf["imbalance_max_mean"] < real["imbalance_max_mean"]


def test_detail_per_layer_pools_into_the_summary(planted):
    rng = np.random.default_rng(2)
    x = np.argsort(rng.random((512, 2, 8)) ** np.array([1.0, 4.0])[None, :, None], axis=-1)[..., :2]
    out = simulate_balance(planted(x, [512], 8, layers=[3, 7]), devices=2, batch_tokens=64, cfs=(1.0, 2.0))
    detail = out["balance_detail"]["round_robin"]
    assert set(detail) == {"3", "7"}
    for cf in ("1.0", "2.0"):
        mean = np.mean([detail[layer][cf]["dropped"] for layer in detail])
        assert out["balance"]["round_robin"][cf]["dropped"] == pytest.approx(mean)
        row = detail["3"][cf]
        assert row["mean_device_assignments"] == pytest.approx(64 * 2 / 2)
        assert row["max_device_assignments"] >= row["mean_device_assignments"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(devices=0), "--devices 0"),
        (dict(batch_tokens=0), "--batch-tokens 0"),
        (dict(cfs=(0.0,)), "[0.0]"),
        (dict(placements=("random",)), "random"),
    ],
)
def test_bad_options_name_the_value(planted, kwargs, fragment):
    path = planted(hot_expert_experts(16), [16], 8)
    with pytest.raises(RoutelensError) as info:
        simulate_balance(path, **kwargs)
    assert fragment in str(info.value)


def test_batches_straddling_shards_count_the_same(planted):
    rng = np.random.default_rng(4)
    x = np.argsort(rng.random((900, 2, 8)), axis=-1)[..., :2]
    lengths = [150] * 6
    one = simulate_balance(planted(x, lengths, 8), devices=4, batch_tokens=128, seed=3)
    three = simulate_balance(planted(x, lengths, 8, shards=3), devices=4, batch_tokens=128, seed=3)
    assert one["balance_detail"] == three["balance_detail"] and one["balance_shuffled"] == three["balance_shuffled"]
