"""RoutingRecorder against the ground truth: the indices and weights each experts module received.

The reference is independent of the recorder: forward pre-hooks on the *experts* modules (the
recorder hooks the routers), on padded batches, for all twelve families.
"""

from __future__ import annotations

import pytest
import torch

from routelens.capture import RoutingRecorder, describe_model
from routelens.errors import RoutelensError
from routelens.models.families import find_routers
from tests.capture.tiny_moe import CONFIGS, EXPECTED_LAYERS, padded_batch

FAMILIES = list(CONFIGS)


def _received(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run a padded batch with pre-hooks on every experts module; per MoE layer, the
    (top_k_index (tokens, k), top_k_weights (tokens, k)) the expert computation was called with."""
    sites = find_routers(model)
    seen: dict[int, dict] = {i: {} for i in range(len(sites))}
    handles = []

    def on_experts(i):
        def hook(module, args, kwargs):
            seen[i]["args"] = [a.detach().clone() if torch.is_tensor(a) else a for a in args]
            seen[i]["kwargs"] = {k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}

        return hook

    def on_block(i):
        def hook(module, args, kwargs):
            seen[i]["block_in"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        return hook

    for i, site in enumerate(sites):
        handles.append(site.owner.experts.register_forward_pre_hook(on_experts(i), with_kwargs=True))
        handles.append(site.owner.register_forward_pre_hook(on_block(i), with_kwargs=True))
    ids, mask = padded_batch()
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    out = []
    for i, site in enumerate(sites):
        args, kwargs = seen[i]["args"], seen[i]["kwargs"]
        if len(args) >= 3:  # experts(hidden_states, top_k_index, top_k_weights): all but Llama4
            out.append((args[1].long(), args[2].float()))
        elif not kwargs and len(args) == 1:
            out.append(_llama4_received(site, seen[i]["block_in"], args[0]))
        else:
            names = sorted(kwargs)
            index = next(kwargs[n] for n in names if "ind" in n)
            out.append((index.long(), next(kwargs[n] for n in names if "weight" in n).float()))
    return out


def _llama4_received(site, block_in, routed_in) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama4 scales each expert's *input*: routed_in (E*T, H) holds hidden * score for every
    expert, zero rows for experts not chosen. The chosen experts are the non-zero rows and each
    weight is recovered as the projection of the scaled row on the token's hidden state."""
    num_experts = site.owner.num_experts
    hidden = block_in.reshape(-1, block_in.shape[-1]).float()  # (T, H)
    routed = routed_in.float().view(num_experts, hidden.shape[0], -1)  # (E, T, H)
    scale = ((routed * hidden).sum(-1) / (hidden * hidden).sum(-1)).T  # (T, E)
    chosen = (routed.abs().sum(-1) > 0).T  # (T, E)
    k = site.router.top_k
    assert bool((chosen.sum(-1) == k).all())
    weights, index = scale.masked_fill(~chosen, -1.0).sort(dim=-1, descending=True)
    return index[:, :k], weights[:, :k]


def _by_expert(index: torch.Tensor, weights: torch.Tensor):
    """Order the k slots of each token by expert id, to compare choices irrespective of order."""
    order = index.argsort(dim=-1)
    return index.gather(-1, order), weights.gather(-1, order)


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_routing_equals_what_the_experts_received(moe_model, family):
    model = moe_model(family)
    spec = describe_model(model)
    truth = _received(model)
    ids, mask = padded_batch()
    with torch.no_grad(), RoutingRecorder(model, spec) as rec:
        model(input_ids=ids, attention_mask=mask)
        got = rec.take()

    assert spec.moe_layers == EXPECTED_LAYERS[family]
    tokens = ids.numel()
    assert got.experts.shape == (tokens, len(spec.moe_layers), spec.top_k)
    assert got.weights.shape == got.experts.shape
    assert got.experts.dtype == torch.int64 and got.weights.dtype == torch.float32
    assert got.probs is None
    assert int(got.experts.min()) >= 0 and int(got.experts.max()) < spec.num_experts
    # Llama4's reference weights are recovered by a division: a few ulps apart
    tol = dict(rtol=1e-5, atol=1e-6) if family == "llama4" else dict(rtol=0, atol=0)
    for layer, (index, weights) in enumerate(truth):
        assert index.shape == (tokens, spec.top_k)
        rec_i, rec_w = _by_expert(got.experts[:, layer], got.weights[:, layer])
        ref_i, ref_w = _by_expert(index, weights)
        assert torch.equal(rec_i, ref_i), f"{family} layer {spec.moe_layers[layer]}: experts differ"
        torch.testing.assert_close(rec_w, ref_w, **tol)
        if family not in ("deepseek_v2", "deepseek_v3", "llama4"):  # routers whose top-k is sorted
            assert torch.equal(got.experts[:, layer], index), "first-choice order differs from the router's"
    if family != "phimoe":  # sparsemixer's second weight may exceed the first
        assert bool((got.weights[..., :-1] >= got.weights[..., 1:]).all()), "first choice is not first"


@pytest.mark.parametrize("family", ["deepseek_v2", "deepseek_v3"])
def test_group_limited_selection_differs_from_plain_top_k(moe_model, family):
    """The exactness test above can fail: plain top-k of the router scores disagrees with what
    these routers chose (groups, and for V3 the correction bias) on many tokens."""
    model = moe_model(family)
    ids, mask = padded_batch()
    with torch.no_grad(), RoutingRecorder(model, store_probs=True) as rec:
        model(input_ids=ids, attention_mask=mask)
        got = rec.take()
    plain = got.probs.topk(got.experts.shape[-1], dim=-1).indices.sort(-1).values
    chosen = got.experts.sort(-1).values
    differ = (plain != chosen).any(-1).float().mean()
    assert differ > 0.1, f"only {differ:.0%} of token-layers differ: the test would not catch plain top-k"


# weights as a closed-form function of the full distribution: (renormalise over the k, scale)
_FROM_PROBS = {
    "mixtral": (True, 1.0),
    "qwen2_moe": (False, 1.0),
    "qwen3_moe": (True, 1.0),
    "olmoe": (False, 1.0),
    "deepseek_v2": (False, 2.0),
    "deepseek_v3": (True, 2.5),
    "gpt_oss": (True, 1.0),
    "granitemoe": (True, 1.0),
    "dbrx": (True, 1.0),
    "jamba": (False, 1.0),
    "llama4": (False, 1.0),
}


@pytest.mark.parametrize("family", list(_FROM_PROBS))
def test_probs_are_the_family_scoring(moe_model, family):
    model = moe_model(family)
    spec = describe_model(model)
    ids, mask = padded_batch()
    with torch.no_grad(), RoutingRecorder(model, spec, store_probs=True) as rec:
        model(input_ids=ids, attention_mask=mask)
        got = rec.take()
    assert got.probs.shape == (ids.numel(), len(spec.moe_layers), spec.num_experts)
    assert got.probs.dtype == torch.float32
    picked = got.probs.gather(-1, got.experts)  # (tokens, L, k)
    renorm, scale = _FROM_PROBS[family]
    if renorm:
        picked = picked / picked.sum(-1, keepdim=True)
    torch.testing.assert_close(got.weights, picked * scale, rtol=1e-5, atol=1e-6)
    if family not in ("deepseek_v3", "llama4"):  # softmax families: a distribution over E
        torch.testing.assert_close(got.probs.sum(-1), torch.ones(got.probs.shape[:2]))


def test_take_returns_every_pass_since_the_last_take_then_clears(moe_model):
    model = moe_model("mixtral")
    ids, mask = padded_batch()
    with torch.no_grad(), RoutingRecorder(model) as rec:
        model(input_ids=ids, attention_mask=mask)
        first = rec.take()
        model(input_ids=ids[:1], attention_mask=mask[:1])
        model(input_ids=ids[1:], attention_mask=mask[1:])
        both = rec.take()
        empty = rec.take()
    assert torch.equal(both.experts, first.experts)
    torch.testing.assert_close(both.weights, first.weights)
    assert empty.experts.shape == (0, 2, 2)


def _hooks_left(model) -> list[str]:
    return [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def test_exception_inside_a_hooked_forward_leaves_no_hook(moe_model):
    model = moe_model("qwen2_moe")
    assert _hooks_left(model) == []
    last = find_routers(model)[-1].owner.experts

    def boom(module, args):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with RoutingRecorder(model) as rec:
            assert len(_hooks_left(model)) == 3  # the recorder's hooks are on, one per router
            handle = last.register_forward_pre_hook(boom)
            try:
                model(input_ids=padded_batch()[0])
            finally:
                handle.remove()
    assert _hooks_left(model) == []
    with pytest.raises(RoutelensError, match="outside its `with` block"):
        rec.take()


def test_spec_of_another_model_is_refused(moe_model):
    spec = describe_model(moe_model("jamba"))  # layers 1, 3
    with pytest.raises(RoutelensError, match=r"MoE layers \[1, 3\].*layers \[0, 1\]"):
        RoutingRecorder(moe_model("mixtral"), spec)
