"""Pruning across every MoE family routelens records (the conformance suite's tiny models): each
either prunes 8 -> 6 experts, runs, records only ids < 6 (after them, its extra choices) with top-k
kept, and at its first MoE layer routes every token whose experts were all kept to the same ones;
or is one of the families docs/pruning.md lists, refused with its reason."""

from __future__ import annotations

import pytest
import torch

from routelens.capture import RoutingRecorder, describe_model
from routelens.errors import RoutelensError
from routelens.models.catalog import moe_families
from routelens.models.families import find_routers, text_config
from routelens.models.tiny import VOCAB, build
from routelens.models.unsupported import UNSUPPORTED
from routelens.pruning.checkpoint import prune_model
from routelens.pruning.surgery import num_groups, why_not_prunable

FAMILIES = {f.model_type: f for f in moe_families() if f.model_type not in UNSUPPORTED}
# family -> words of the reason why_not_prunable gives (also listed in docs/pruning.md)
NOT_PRUNABLE = {
    "dbrx": "not (E = 4, ...) per expert",  # experts stacked as (E x ffn, H) matrices
    "deepseek_v4": "hash-routed",
}
# family -> words of the reason prune_model gives for not saving it pruned
NOT_SAVABLE = {"ernie4_5_vl_moe": "also sizes"}  # one config count sizes its text and its vision experts


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_prunes_or_says_why(model_type, tmp_path):
    model = build(model_type, FAMILIES[model_type].module)
    sites = find_routers(model)
    reasons = [why_not_prunable(s) for s in sites]
    if model_type in NOT_PRUNABLE:
        assert any(r and NOT_PRUNABLE[model_type] in r for r in reasons), reasons
        return
    assert reasons == [None] * len(sites)
    spec = describe_model(model)
    if model_type in NOT_SAVABLE:
        with pytest.raises(RoutelensError, match=NOT_SAVABLE[model_type]):
            prune_model(model, {layer: [0, 1, 2, 4, 5, 7] for layer in spec.moe_layers})
        return
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), RoutingRecorder(model, spec) as recorder:
        model(input_ids=ids)
        before = recorder.take().experts[:, 0]  # (tokens, k) at the first MoE layer
    grouped = num_groups(sites[0], text_config(model)) > 1
    if grouped:
        keep = [0, 1, 2, 4, 5, 7]  # three of each half: two expert groups stay equal
    else:  # the six experts the first MoE layer used most, so that many tokens keep all theirs
        used = torch.bincount(before[before < spec.num_experts].flatten(), minlength=spec.num_experts)
        keep = sorted(int(e) for e in torch.argsort(-used.float(), stable=True)[:6])
    prune_model(model, {layer: keep for layer in spec.moe_layers})
    after = describe_model(model)
    assert after.num_experts == 6 and after.top_k == spec.top_k and after.moe_layers == spec.moe_layers
    assert after.num_zero_experts == spec.num_zero_experts
    with torch.no_grad(), RoutingRecorder(model, after) as recorder:
        model(input_ids=ids)
        routed = recorder.take().experts
    chosen = routed[routed < after.no_expert_id]
    assert chosen.numel() > 0 and int(chosen.max()) < 6 + after.num_zero_experts
    # the pruned checkpoint saves and loads back as the same model (its config says 6 experts)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = [m(input_ids=ids) for m in (reloaded, model)]
        torch.testing.assert_close(
            *[getattr(o, "logits", None) if hasattr(o, "logits") else o.last_hidden_state for o in out],
            rtol=1e-5,
            atol=1e-5,
        )
    if grouped:  # a group's score sums its best experts, which pruning may remove: choices can move
        return
    if spec.rule.startswith("softmax") and "bias correction" in spec.rule:
        return  # a softmax over fewer experts scales every score up, and an additive bias then weighs less
    # old id -> new id: kept experts by rank, zero-computation experts and the empty slot after them
    renumber = {old: new for new, old in enumerate(keep)}
    renumber |= {spec.num_experts + j: 6 + j for j in range(spec.num_zero_experts + 1)}
    whole = [t for t in range(len(before)) if all(int(e) in renumber for e in before[t])]
    assert whole, "no token kept all its experts: the check would be empty"
    for t in whole:
        assert sorted(renumber[int(e)] for e in before[t]) == sorted(routed[t, 0].tolist()), (model_type, t)
