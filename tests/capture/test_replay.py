"""`routelens.replay` as a context manager: what routes freely, what it leaves behind, what it refuses,
gradient checkpointing and the balance loss (the per-family checks are test_replay_conformance.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import routelens
from routelens.models.families import find_routers
from routelens.models.tiny import VOCAB, build

B, T = 2, 6


@pytest.fixture(scope="module")
def mixtral():
    return build("mixtral", "transformers.models.mixtral.modeling_mixtral")


def _ids(seed=0):
    return torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _record(model, ids, **kwargs):
    """(output logits, ids each layer's experts got (B, T, L, k)), read by the test's own hooks."""
    sites = find_routers(model)
    seen = {}
    handles = [
        s.experts.register_forward_pre_hook(lambda m, a, slot=i: seen.__setitem__(slot, a[1].detach().clone()))
        for i, s in enumerate(sites)
    ]
    try:
        out = model(input_ids=ids, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out, torch.stack([seen[i].reshape(B, T, -1) for i in range(len(sites))], 2)


def _planted(seed=1, layers=4, k=2, experts=8):
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(experts, generator=gen)[:k] for _ in range(B * T * layers)]
    return torch.stack(rows).reshape(B, T, layers, k)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_free_rows_route_by_the_router_and_forced_rows_as_given(mixtral):
    ids = _ids()
    with torch.no_grad():
        _, own = _record(mixtral, ids)
    planted = _planted()
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # padding: routes freely
    planted[0, 2, 1] = torch.tensor([-1, -1])  # a row the routing lacks: routes freely
    with torch.no_grad(), routelens.replay(mixtral, planted.numpy(), attention_mask=mask) as rep:
        _, got = _record(mixtral, ids, attention_mask=mask)
    assert rep.calls == [1, 1, 1, 1] and rep.layers == [0, 1, 2, 3]
    free = torch.zeros(B, T, 4, dtype=torch.bool)
    free[1, 4:] = True
    free[0, 2, 1] = True
    assert torch.equal(got[~free], planted[~free])
    # the free rows are the router's own choice on this (masked) input, so compare with the plain masked forward
    with torch.no_grad():
        _, own_masked = _record(mixtral, ids, attention_mask=mask)
    assert torch.equal(got[free], own_masked[free])
    assert not torch.equal(got, own)


def test_nothing_is_left_on_the_model_even_when_the_forward_raises(mixtral):
    ids = _ids()
    before = _hooks(mixtral)
    with torch.no_grad():
        plain = mixtral(input_ids=ids).logits
    with pytest.raises(ZeroDivisionError):
        with torch.no_grad(), routelens.replay(mixtral, _planted()):
            mixtral(input_ids=ids)
            raise ZeroDivisionError
    # raising inside a MoE block: the block's selection override ends with the block
    site = find_routers(mixtral)[1]
    handle = site.experts.register_forward_pre_hook(lambda m, a: 1 / 0)
    try:
        with pytest.raises(ZeroDivisionError), torch.no_grad(), routelens.replay(mixtral, _planted()):
            mixtral(input_ids=ids)
    finally:
        handle.remove()
    assert _hooks(mixtral) == before
    assert torch._C._len_torch_function_stack() == 0
    with torch.no_grad():
        assert torch.equal(mixtral(input_ids=ids).logits, plain)


def test_gradient_checkpointing_replays_the_same_ids_in_the_recomputation():
    model = build("mixtral", "transformers.models.mixtral.modeling_mixtral")
    ids, planted = _ids(), _planted()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with routelens.replay(model, planted) as rep:
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if "gate" in n})
        calls = rep.calls
    model.gradient_checkpointing_disable()
    model.eval()
    assert calls == [2, 2, 2, 2]  # each layer's selection replaced again in the recomputation
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
        assert g.abs().sum() > 0, name


def _balance_loss(model, logits_per_layer: list[torch.Tensor], chosen: torch.Tensor) -> torch.Tensor:
    """Switch-style balance loss written out: E * sum over k and e of (share of tokens whose k-th choice
    is e) * (mean router probability of e), all layers' tokens pooled; `chosen` (L * tokens, k)."""
    probs = torch.cat(logits_per_layer).softmax(-1)
    E = probs.shape[-1]
    share = torch.nn.functional.one_hot(chosen, E).float().mean(0)  # (k, E)
    return E * (share * probs.mean(0)[None]).sum()


def test_the_balance_loss_uses_the_replayed_selection(mixtral):
    ids, planted = _ids(), _planted()
    with torch.no_grad():
        own = mixtral(input_ids=ids, output_router_logits=True)
        with routelens.replay(mixtral, planted):
            replayed = mixtral(input_ids=ids, output_router_logits=True)
    chosen = planted.permute(2, 0, 1, 3).reshape(-1, 2)  # layer-major, as the logits are concatenated
    want = _balance_loss(mixtral, list(replayed.router_logits), chosen)
    torch.testing.assert_close(replayed.aux_loss, want, rtol=1e-6, atol=0)
    assert not torch.allclose(own.aux_loss, want)


@pytest.mark.parametrize(
    ("experts", "message"),
    [
        (np.zeros((B, T, 4, 2), dtype=np.float32), "must be integer ids"),
        (np.zeros((B, T, 3, 2), dtype=np.int64), "4 MoE layers"),
        (np.zeros((B, T, 4, 2), dtype=np.int64), "names one expert twice"),
        ([[1, 2]], "integer array or tensor"),
    ],
)
def test_bad_experts_are_refused_in_one_line(mixtral, experts, message):
    with pytest.raises(routelens.RoutelensError, match=message) as info:
        with routelens.replay(mixtral, experts):
            pass
    assert "\n" not in str(info.value)


def test_ids_out_of_range_and_another_batch_are_refused_in_one_line(mixtral):
    before = _hooks(mixtral)
    far = _planted()
    far[0, 0, 0, 0] = 8
    with pytest.raises(routelens.RoutelensError, match="0 <= id < 8"), routelens.replay(mixtral, far):
        mixtral(input_ids=_ids())
    with pytest.raises(routelens.RoutelensError, match="routed 24 tokens where the given experts cover 12"):
        with routelens.replay(mixtral, _planted()):
            mixtral(input_ids=torch.cat([_ids(), _ids()]))
    with pytest.raises(routelens.RoutelensError, match="attention_mask has shape"):
        with routelens.replay(mixtral, _planted(), attention_mask=torch.ones(1, T)):
            pass
    assert _hooks(mixtral) == before and torch._C._len_torch_function_stack() == 0
