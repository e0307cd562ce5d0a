"""Routings beyond one fixed k over E experts, each on a tiny model of a family that has it.

Per-layer k (HunYuan `moe_topk` list): layers with a smaller k are padded with the no-expert
id and weight 0. Zero-computation experts (LongCat-Flash `zero_expert_num`): ids E..E+Z-1 are
recorded as they are. Hash-routed layers (DeepSeek-V4 `hash_moe`): experts follow the token ->
experts table. The masked-token sentinel of an experts implementation is never an expert.
"""

from __future__ import annotations

import pytest
import torch

from routelens.capture import RoutingRecorder, RoutingSpec, describe_model
from routelens.models.families import find_routers
from routelens.models.tiny import VOCAB, build

HUNYUAN = "transformers.models.hunyuan_v1_moe.modeling_hunyuan_v1_moe"
LONGCAT = "transformers.models.longcat_flash.modeling_longcat_flash"
DSV4 = "transformers.models.deepseek_v4.modeling_deepseek_v4"
DSV3 = "transformers.models.deepseek_v3.modeling_deepseek_v3"


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([12, 9, 5])
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return torch.randint(3, VOCAB, (3, 12), generator=gen).masked_fill(mask == 0, 0), mask


def _run(model, spec=None):
    """Recorded routing and, per MoE layer, the (index, weights) each experts module was called with."""
    seen = []
    handles = [
        site.experts.register_forward_pre_hook(lambda m, a: seen.append((a[1].clone(), a[2].clone())))
        for site in find_routers(model)
    ]
    ids, mask = _batch()
    try:
        with torch.no_grad(), RoutingRecorder(model, spec) as rec:
            model(input_ids=ids, attention_mask=mask)
            got = rec.take()
    finally:
        for h in handles:
            h.remove()
    return got, seen, ids


def _assert_same(rec_i, rec_w, ref_i, ref_w):
    """Same experts with the same weights per token, irrespective of slot order."""
    a, b = rec_i.argsort(-1), ref_i.argsort(-1)
    assert torch.equal(rec_i.gather(-1, a), ref_i.long().gather(-1, b))
    torch.testing.assert_close(rec_w.gather(-1, a), ref_w.float().gather(-1, b), rtol=0, atol=0)


def test_per_layer_k_is_padded_with_the_no_expert_id_and_weight_zero():
    model = build("hunyuan_v1_moe", HUNYUAN, moe_topk=[1, 3, 2, 3])
    spec = describe_model(model)
    assert spec.top_k_per_layer == [1, 3, 2, 3] and spec.top_k == 3
    got, seen, ids = _run(model, spec)
    empty = spec.no_expert_id
    assert empty == spec.num_experts  # no zero-computation experts: one past the last expert
    for layer, (k, (index, weights)) in enumerate(zip(spec.top_k_per_layer, seen)):
        assert index.shape[-1] == k
        _assert_same(got.experts[:, layer, :k], got.weights[:, layer, :k], index, weights)
        assert bool((got.experts[:, layer, k:] == empty).all()) and bool((got.weights[:, layer, k:] == 0).all())
        assert bool((got.experts[:, layer, :k] < spec.num_experts).all())


def test_zero_computation_experts_are_recorded_with_their_ids():
    model = build("longcat_flash", LONGCAT)
    spec = describe_model(model)
    E, Z = spec.num_experts, spec.num_zero_experts
    assert (E, Z) == (8, 2) and spec.no_expert_id == E + Z
    assert "zero-computation" in spec.rule
    with torch.no_grad():  # make the first zero expert win everywhere: every token uses it
        for site in find_routers(model):
            site.router.e_score_correction_bias[E] = 10.0
    chosen = []  # the router's own (index, weights): what LongCat's block computes with
    handles = [
        site.router.register_forward_hook(lambda m, a, out: chosen.append((out[2].clone(), out[1].clone())))
        for site in find_routers(model)
    ]
    try:
        got, seen, _ = _run(model, spec)
    finally:
        for h in handles:
            h.remove()
    for layer, ((index, weights), (given_i, given_w)) in enumerate(zip(chosen, seen)):
        _assert_same(got.experts[:, layer], got.weights[:, layer], index, weights)
        real = index < E  # the experts get the real choices as chosen (and, from 5.25, zero ones with weight 0)
        assert torch.equal(given_i[real], index[real]) and torch.equal(given_w[real], weights[real])
    assert bool((got.experts == E).any(-1).all()), "the zero expert E should be in every token's k"
    assert int(got.experts.max()) < E + Z


def test_hash_routed_layers_follow_the_token_table():
    model = build("deepseek_v4", DSV4)
    spec = describe_model(model)
    assert spec.hash_routed_layers, "the tiny DeepSeek-V4 should have hash_moe layers"
    assert set(spec.hash_routed_layers) < set(spec.moe_layers)  # the rest route by score
    assert "token id" in spec.rule
    gen = torch.Generator().manual_seed(3)
    tables = {}
    with torch.no_grad():  # random init leaves tid2eid all zeros: give each token k distinct experts
        for site in find_routers(model):
            if site.hash_routed:
                table = torch.stack(
                    [torch.randperm(spec.num_experts, generator=gen)[: spec.top_k] for _ in range(VOCAB)]
                )
                site.router.tid2eid.copy_(table)
                tables[site.layer] = table
    got, seen, ids = _run(model, spec)
    for layer, moe_layer in enumerate(spec.moe_layers):
        index, weights = seen[layer]
        _assert_same(got.experts[:, layer], got.weights[:, layer], index, weights)
        if moe_layer in tables:
            expected = tables[moe_layer][ids.reshape(-1)].sort(-1).values
            assert torch.equal(got.experts[:, layer].sort(-1).values, expected)


def test_the_masked_token_sentinel_is_recorded_as_an_empty_slot():
    """DeepSeek-V3's experts skip index E (one_hot over E + 1 classes): a token whose second slot
    carries E used one expert, so the recording holds one expert and an empty slot."""
    model = build("deepseek_v3", DSV3)
    spec = describe_model(model)
    E = spec.num_experts
    last = find_routers(model)[-1].experts

    def mask_second_slot(module, args):
        index = args[1].clone()
        index[:4, 1] = E
        return (args[0], index, args[2])

    handle = last.register_forward_pre_hook(mask_second_slot)  # runs before the recorder's hook
    try:
        got, _, _ = _run(model, spec)
    finally:
        handle.remove()
    assert int(got.experts[:, :-1].max()) < E
    assert bool((got.experts[:4, -1, -1] == spec.no_expert_id).all())
    assert bool((got.weights[:4, -1, -1] == 0).all())
    assert bool((got.experts[4:, -1] < E).all())


def test_spec_rejects_a_k_list_of_the_wrong_length():
    with pytest.raises(AssertionError):
        RoutingSpec("x", "r", [0, 1], 8, 2, 10, top_k_per_layer=[2])
