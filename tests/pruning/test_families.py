"""Pruning across every MoE family routelens records (the conformance suite's tiny models): each
either prunes 8 -> 6 experts, runs, and records only ids < 6 with top-k kept, or is one of the
families docs/pruning.md lists, refused with its reason."""

from __future__ import annotations

import pytest
import torch

from routelens.capture import RoutingRecorder, describe_model
from routelens.capture.catalog import moe_families
from routelens.capture.families import find_routers
from routelens.capture.unsupported import UNSUPPORTED
from routelens.pruning.checkpoint import prune_model
from routelens.pruning.surgery import why_not_prunable
from tests.capture.tiny_auto import VOCAB, build

FAMILIES = {f.model_type: f for f in moe_families() if f.model_type not in UNSUPPORTED}
# family -> words of the reason why_not_prunable gives (also listed in docs/pruning.md)
NOT_PRUNABLE = {
    "dbrx": "not (E = 4, ...) per expert",  # experts stacked as (E x ffn, H) matrices
    "deepseek_v4": "hash-routed",
    "longcat_flash": "zero-computation experts",
    "inkling_mm_model": "extra null choices",
    "zaya": "extra null choices",
    "muse_spark": "not (E = 8, ...) per expert",  # a projection shared by all experts inside the experts module
}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_prunes_or_says_why(model_type):
    model = build(model_type, FAMILIES[model_type].module)
    sites = find_routers(model)
    reasons = [why_not_prunable(s) for s in sites]
    if model_type in NOT_PRUNABLE:
        assert any(r and NOT_PRUNABLE[model_type] in r for r in reasons), reasons
        return
    assert reasons == [None] * len(sites)
    spec = describe_model(model)
    keep = [0, 1, 2, 4, 5, 7]  # three of each half: two expert groups stay equal
    prune_model(model, {layer: keep for layer in spec.moe_layers})
    after = describe_model(model)
    assert after.num_experts == 6 and after.top_k == spec.top_k and after.moe_layers == spec.moe_layers
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), RoutingRecorder(model, after) as recorder:
        model(input_ids=ids)
        routed = recorder.take().experts
    chosen = routed[routed < after.no_expert_id]
    assert chosen.numel() > 0 and int(chosen.max()) < 6 + after.num_zero_experts
