"""Expert capacity: the slot formula, the priority order, exact equality when nothing is dropped,
the planted share dropped when capacity is tiny, and residual-only outputs for dropped tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import MixtralForCausalLM
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from routelens.errors import RoutelensError
from routelens.training.capacity import apply_capacity, capacity_keep_mask, expert_capacity
from tests.conftest import tiny_mixtral_config


def _model(**overrides) -> MixtralForCausalLM:
    torch.manual_seed(0)
    return MixtralForCausalLM(tiny_mixtral_config(**overrides)).eval()


def _keep_reference(index: np.ndarray, num_experts: int, capacity: int) -> np.ndarray:
    """Brute force: walk choice ranks, then tokens, filling each expert's slots."""
    used = [0] * num_experts
    keep = np.zeros(index.shape, bool)
    for rank in range(index.shape[1]):
        for token in range(index.shape[0]):
            e = index[token, rank]
            if used[e] < capacity:
                used[e] += 1
                keep[token, rank] = True
    return keep


def test_capacity_formula():
    assert expert_capacity(10, 4, 2, 1.0) == 5  # 10 x 2 / 4
    assert expert_capacity(10, 4, 2, 1.25) == 7  # ceil(6.25)
    assert expert_capacity(4096, 8, 1, 1.0) == 512  # Switch: tokens / E
    assert expert_capacity(4096, 8, 2, 2.0) == 2048
    with pytest.raises(RoutelensError, match="capacity factor 0"):
        expert_capacity(10, 4, 2, 0)


@pytest.mark.parametrize("k,capacity", [(1, 3), (2, 5), (3, 2), (2, 100)])
def test_keep_mask_matches_brute_force(k, capacity):
    rng = np.random.default_rng(k * 100 + capacity)
    index = np.stack([rng.choice(6, size=k, replace=False) for _ in range(40)])  # (tokens, k)
    got = capacity_keep_mask(torch.from_numpy(index), 6, capacity).numpy()
    assert got.shape == (40, k)
    np.testing.assert_array_equal(got, _keep_reference(index, 6, capacity))


def _planted_block(tokens: int, hidden: int = 32):
    """A block whose router sends every token first to expert 0, second to expert 1."""
    block = MixtralSparseMoeBlock(tiny_mixtral_config(hidden_size=hidden)).eval()
    torch.manual_seed(1)
    for p in block.experts.parameters():
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        block.gate.weight.zero_()
        block.gate.weight[0, 0], block.gate.weight[1, 0] = 10.0, 5.0
    h = torch.randn(1, tokens, hidden) * 0.1
    h[..., 0] = 1.0  # logits: expert 0 = 10, expert 1 = 5, others 0
    return block, h


@pytest.mark.parametrize("cf", [0.25, 0.5, 1.0])
def test_tiny_capacity_drops_the_planted_share(cf):
    tokens = 20
    block, h = _planted_block(tokens)
    capacity = math.ceil(tokens * 2 / 8 * cf)  # experts 0 and 1 each receive all 20 tokens
    with torch.no_grad():
        ref = block(h)
        with apply_capacity(block, capacity_factor=cf) as stats:
            got = block(h)
    assert stats.dropped_share()[0] == pytest.approx((tokens - capacity) / tokens)
    assert stats.fully_dropped_share()[0] == pytest.approx((tokens - capacity) / tokens)
    # tokens in token order get the slots: the first `capacity` are untouched, the rest get zero
    assert torch.equal(got[0, :capacity], ref[0, :capacity])
    assert torch.count_nonzero(got[0, capacity:]) == 0 and torch.count_nonzero(ref[0, capacity:]) > 0


def test_second_choice_dropped_keeps_first_weight():
    """Priority by rank: expert 1 is everyone's second choice but token 0's first choice."""
    block, h = _planted_block(4)
    with torch.no_grad():
        h[0, 0, 1] = 4.0  # token 0 only: a feature that expert 1 weighs heavily
        block.gate.weight[1, 1] = 10.0
        probs = torch.softmax(block.gate.weight @ h[0].T, dim=0).T  # (tokens, E)
        assert probs[0].argmax() == 1 and probs[1].argmax() == 0
        # capacity ceil(4 x 2 / 8 x 0.25) = 1: expert 1's slot goes to token 0's first choice
        with apply_capacity(block, capacity_factor=0.25):
            got = block(h)[0]
        flat = h[0]
        gate_up = block.experts.gate_up_proj
        down = block.experts.down_proj

        def expert(e, x):
            g, u = (x @ gate_up[e].T).chunk(2, dim=-1)
            return (torch.nn.functional.silu(g) * u) @ down[e].T

        top2 = torch.topk(probs[0], 2)
        w0 = (
            top2.values[0] / top2.values.sum()
        )  # renormalised first weight, kept as is (no renormalisation after drops)
        torch.testing.assert_close(got[0], w0 * expert(1, flat[0]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            got[1], (probs[1, 0] / torch.topk(probs[1], 2).values.sum()) * expert(0, flat[1]), rtol=1e-5, atol=1e-6
        )
        assert torch.count_nonzero(got[2:]) == 0


def test_dropped_tokens_pass_through_residual_only():
    """In a full model, a decoder layer's output for a fully dropped token equals its residual
    stream after attention (the input of post_attention_layernorm)."""
    model = _model()
    layer = model.model.layers[0]
    seen = {}
    pre = layer.post_attention_layernorm.register_forward_hook(
        lambda m, i, o: seen.__setitem__("residual", i[0].detach())
    )
    post = layer.register_forward_hook(
        lambda m, i, o: seen.__setitem__("out", (o[0] if isinstance(o, tuple) else o).detach())
    )
    try:
        ids = torch.randint(0, 300, (2, 16))
        with torch.no_grad(), apply_capacity(model, capacity_factor=0.1) as stats:
            model(input_ids=ids)
    finally:
        pre.remove()
        post.remove()
    capacity = math.ceil(32 * 2 / 8 * 0.1)  # 1 slot per expert: at most 8 assignments of 64 survive
    assert stats.dropped[0] >= 64 - 8 and stats.tokens_fully_dropped[0] >= 32 - 8
    out, residual = seen["out"].reshape(32, -1), seen["residual"].reshape(32, -1)
    same = (out == residual).all(dim=-1)  # (tokens,)
    assert int(same.sum()) == stats.tokens_fully_dropped[0] and capacity == 1


def test_top_k_override_and_restore():
    model = _model()
    ids = torch.randint(0, 300, (2, 9))
    block = model.model.layers[1].mlp
    received = []
    hook = block.experts.register_forward_hook(lambda m, i, o: received.append((i[1].clone(), i[2].clone())))
    try:
        with torch.no_grad(), apply_capacity(model, top_k=1):
            model(input_ids=ids)
    finally:
        hook.remove()
    index, weights = received[0]
    assert index.shape == (18, 1) and torch.equal(weights, torch.ones(18, 1))
    # the capacity is a forward pre-hook on the experts (the block's own forward is never replaced)
    hooked = lambda: len(block.experts._forward_pre_hooks)  # noqa: E731
    assert block.gate.top_k == block.top_k == 2 and hooked() == 0 and "forward" not in vars(block)  # restored
    with pytest.raises(RuntimeError, match="boom"), apply_capacity(model, capacity_factor=1.0, top_k=3):
        assert block.gate.top_k == block.top_k == 3 and hooked() == 1
        raise RuntimeError("boom")
    assert block.gate.top_k == block.top_k == 2 and hooked() == 0 and "forward" not in vars(block)


def test_bad_values_name_the_fix():
    model = _model()
    with pytest.raises(RoutelensError, match="top-k 9"), apply_capacity(model, top_k=9):
        pass
    with pytest.raises(RoutelensError, match="capacity factor -1"), apply_capacity(model, capacity_factor=-1):
        pass
    with pytest.raises(RoutelensError, match="MixtralSparseMoeBlock"), apply_capacity(torch.nn.Linear(2, 2)):
        pass


# ---- every family routelens records, not only Mixtral -------------------------------------------
FAMILY_CASES = ["olmoe", "qwen2_moe", "deepseek_v3"]  # renormalised; shared expert; sigmoid, groups, unsorted top-k


def _family_model(family: str):
    from tests.pruning.conftest import tiny_model

    return tiny_model(family)


def _capture_experts_inputs(model):
    """Pre-hooks registered before apply_capacity's: they see what the router gave the experts."""
    from routelens.models.families import find_routers

    seen: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    handles = []
    for site in find_routers(model):
        calls: list = []
        seen.append(calls)
        handles.append(
            site.experts.register_forward_pre_hook(
                lambda m, args, c=calls: c.append((args[1].clone(), args[2].clone()))
            )
        )
    return seen, handles


@pytest.mark.parametrize("family", ["mixtral", *FAMILY_CASES])
def test_family_huge_capacity_changes_nothing(family):
    model = _family_model(family)
    ids = torch.randint(3, 300, (3, 11))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with apply_capacity(model, capacity_factor=1e6) as stats:
            got = model(input_ids=ids).logits
    assert torch.equal(ref, got)
    assert stats.layers == ([1, 2] if family == "deepseek_v3" else [0, 1])  # DeepSeek-V3's first layer is dense
    assert stats.dropped.sum() == 0 and stats.tokens.tolist() == [33, 33] and stats.assignments.tolist() == [66, 66]


@pytest.mark.parametrize("family", FAMILY_CASES)
@pytest.mark.parametrize("cf", [0.25, 0.5, 1.0])
def test_family_drops_what_a_brute_force_count_drops(family, cf):
    model = _family_model(family)
    seen, handles = _capture_experts_inputs(model)
    ids = torch.randint(3, 300, (2, 13))
    try:
        with torch.no_grad():
            ref = model(input_ids=ids).logits
            for calls in seen:
                calls.clear()
            with apply_capacity(model, capacity_factor=cf) as stats:
                got = model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    for slot, calls in enumerate(seen):
        index, weights = (t.numpy() for t in calls[0])  # (26, 2) as the router gave them, in its column order
        order = np.argsort(-weights, axis=1, kind="stable")  # first choice first (DeepSeek-V3's top-k is unsorted)
        ranked = np.take_along_axis(index, order, axis=1)
        keep = _keep_reference(ranked, 8, math.ceil(26 * 2 / 8 * cf))
        assert int(stats.dropped[slot]) == int((~keep).sum()), (family, cf, slot)
        assert int(stats.tokens_fully_dropped[slot]) == int((~keep).all(axis=1).sum())
        assert stats.dropped_share()[slot] == pytest.approx((~keep).sum() / 52)
    assert stats.dropped.sum() > 0 and not torch.equal(ref, got)  # the counts compared were not all zero


def test_deepseek_capacity_ranks_choices_by_weight():
    """An unsorted router's column order is not its choice order: the slots go to the heavier choice."""
    from routelens.models.families import find_routers

    site = find_routers(_family_model("deepseek_v3"))[0]
    assert not site.best_first
    index = torch.tensor([[1, 0], [0, 1]])  # two tokens, both choosing experts 0 and 1
    weights = torch.tensor([[0.2, 0.8], [0.9, 0.1]])  # both prefer expert 0: column 1 for token 0, column 0 for token 1
    received = []
    with (
        torch.no_grad(),
        apply_capacity(site.owner, capacity_factor=0.5),
    ):  # the block alone; capacity ceil(2 x 2 / 8 x 0.5) = 1
        grab = site.experts.register_forward_pre_hook(lambda m, args: received.append(args[2].clone()))  # runs after
        try:
            site.experts(torch.zeros(2, 32), index, weights)
        finally:
            grab.remove()
    # by weight: token 0 takes both slots (its first choice, expert 0, comes before token 1's); by
    # column order it would keep [[0.2, 0], [0.9, 0]] (token 1's column 0 is expert 0)
    torch.testing.assert_close(received[0], torch.tensor([[0.2, 0.8], [0.0, 0.0]]))


@pytest.mark.parametrize("family", ["olmoe", "deepseek_v3"])
def test_family_top_k_override_routes_k_experts_and_restores(family):
    from routelens.models.families import find_routers

    model = _family_model(family)
    seen, handles = _capture_experts_inputs(model)
    ids = torch.randint(3, 300, (2, 9))
    try:
        with torch.no_grad(), apply_capacity(model, top_k=1) as stats:
            model(input_ids=ids)
        widths = [calls[0][0].shape[-1] for calls in seen]
        for calls in seen:
            calls.clear()
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    assert widths == [1, 1] and stats.assignments.tolist() == [18, 18]
    assert [calls[0][0].shape[-1] for calls in seen] == [2, 2]  # restored
    assert all(s.router.top_k == 2 for s in find_routers(model))


def test_a_k_the_family_does_not_take_is_refused():
    """The first call checks the experts really got k columns: here a router whose k was put back."""
    from routelens.models.families import find_routers

    model = _family_model("olmoe")
    router = find_routers(model)[1].router
    with pytest.raises(RoutelensError, match="k cannot be overridden: model.layers.1.mlp.experts still chose 2"):
        with torch.no_grad(), apply_capacity(model, top_k=1):
            router.top_k = 2  # as if the family read k from somewhere routelens does not set
            model(input_ids=torch.randint(3, 300, (1, 5)))
    assert router.top_k == 2


def test_llama4_and_hash_routed_are_refused_a_capacity_in_one_line():
    import dataclasses

    from routelens.models.families import find_routers
    from routelens.training.capacity import why_no_capacity
    from tests.capture.tiny_moe import build

    model = build("llama4")
    with pytest.raises(
        RoutelensError,
        match=r"capacity factor 1 cannot be applied to this llama4 model: .*its router scaled.*without --capacity-factor",
    ):
        with apply_capacity(model, capacity_factor=1.0):
            pass
    with pytest.raises(RoutelensError, match="top-k 1 cannot be applied to this llama4 model.*without --top-k"):
        with apply_capacity(model, top_k=1):
            pass
    ids = torch.randint(3, 97, (1, 6))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with apply_capacity(model) as stats:  # plain evaluation still works
            got = model(input_ids=ids).logits
    assert torch.equal(ref, got) and stats.layers == [1, 3] and stats.dropped_share().tolist() == [0.0, 0.0]
    site = find_routers(_family_model("olmoe"))[0]
    assert why_no_capacity(site) is None
    assert "routed by token id" in why_no_capacity(dataclasses.replace(site, hash_routed=True))
