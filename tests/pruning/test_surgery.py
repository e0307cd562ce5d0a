"""Removing experts from a loaded model: the kept experts' tensors bit-equal, the router's rows and
biases kept, and the router choosing among the kept experts exactly as the family's rule does."""

from __future__ import annotations

import pytest
import torch

from routelens.errors import RoutelensError
from routelens.models.families import find_routers
from routelens.pruning.surgery import remove_experts, update_config, why_not_prunable
from tests.pruning.conftest import FAMILIES, RENORMALISED, tiny_model

KEEP = [0, 1, 2, 4, 5, 7]  # three of each half: valid for DeepSeek-V3's two groups of four


def _per_expert_tensors(model) -> dict[str, torch.Tensor]:
    """Every tensor of the MoE blocks with one entry per expert on its first axis, by name."""
    names = {}
    for site in find_routers(model):
        for module in (site.router, site.experts, site.owner):
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                if t.dim() and t.shape[0] == site.num_experts:
                    full = f"{site.name.rsplit('.', 1)[0]}:{type(module).__name__}.{name}"
                    names[full] = t.detach().clone()
    return names


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_experts_and_router_rows_are_bit_equal(family):
    model = tiny_model(family)
    before = _per_expert_tensors(model)
    assert any("e_score_correction_bias" in n for n in before) == (family == "deepseek_v3")
    kept = remove_experts(model, {s.layer: KEEP for s in find_routers(model)})
    after = _per_expert_tensors_after(model, len(KEEP))
    assert set(after) == set(before) and kept == {s.layer: KEEP for s in find_routers(model)}
    for name, t in before.items():
        assert after[name].shape[0] == len(KEEP)
        assert torch.equal(after[name], t[KEEP]), name
    shared = [n for n, _ in model.named_parameters() if "shared_expert" in n]
    assert bool(shared) == (family in ("qwen2_moe", "deepseek_v3"))  # shared experts stay whole


def _per_expert_tensors_after(model, n: int) -> dict[str, torch.Tensor]:
    names = {}
    for site in find_routers(model):
        assert site.num_experts == n and site.top_k == 2
        for module in (site.router, site.experts, site.owner):
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                if t.dim() and t.shape[0] == n:
                    names[f"{site.name.rsplit('.', 1)[0]}:{type(module).__name__}.{name}"] = t.detach().clone()
    return names


def _block_routing(site, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weights) (tokens, k) the experts of this block receive for `hidden` (1, T, H)."""
    seen = []
    handle = site.experts.register_forward_pre_hook(lambda m, args: seen.append((args[1].clone(), args[2].clone())))
    try:
        with torch.no_grad():
            site.owner(hidden)
    finally:
        handle.remove()
    return seen[0]


def _by_id(index: torch.Tensor, weights: torch.Tensor):
    order = index.sort(dim=-1).indices
    return index.gather(-1, order), weights.gather(-1, order)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_whose_experts_were_all_kept_route_the_same(family):
    """The same hidden states into the original and the pruned block: a token whose chosen experts
    were all kept gets the same experts (renumbered) and, where the family renormalises, the same weights."""
    original, pruned = tiny_model(family), tiny_model(family)
    remove_experts(pruned, {s.layer: KEEP for s in find_routers(pruned)})
    new_id = torch.full((8,), -1, dtype=torch.long)
    new_id[KEEP] = torch.arange(len(KEEP))
    hidden = torch.randn(1, 400, 32, generator=torch.Generator().manual_seed(3))
    for a, b in zip(find_routers(original), find_routers(pruned)):
        idx, w = _block_routing(a, hidden)
        pidx, pw = _block_routing(b, hidden)
        assert int(pidx.max()) < len(KEEP)
        unaffected = (new_id[idx] >= 0).all(dim=-1)  # (tokens,)
        assert 50 < int(unaffected.sum()) < len(unaffected)  # both kinds of token occur
        mapped, w = _by_id(new_id[idx[unaffected]], w[unaffected])
        got, pw_u = _by_id(pidx[unaffected], pw[unaffected])
        assert torch.equal(got, mapped)
        if family in RENORMALISED:
            torch.testing.assert_close(pw_u, w, rtol=1e-5, atol=1e-6)
        else:  # softmax over fewer experts without renormalisation: every weight grows
            assert bool((pw_u >= w - 1e-7).all())


def test_softmax_router_of_the_kept_experts_equals_masking_the_removed_logits():
    """Mixtral: the pruned router's choice and weights are the original's with -inf logits for the removed."""
    original, pruned = tiny_model("mixtral"), tiny_model("mixtral")
    remove_experts(pruned, {s.layer: KEEP for s in find_routers(pruned)})
    site, psite = find_routers(original)[0], find_routers(pruned)[0]
    h = torch.randn(300, 32, generator=torch.Generator().manual_seed(5))
    logits = h @ site.router.weight.T
    removed = [e for e in range(8) if e not in KEEP]
    logits[:, removed] = float("-inf")
    top = logits.softmax(-1).topk(2, dim=-1)
    want_w = top.values / top.values.sum(-1, keepdim=True)
    with torch.no_grad():
        _, got_w, got_idx = psite.router(h)
    assert torch.equal(torch.tensor(KEEP)[got_idx], top.indices)
    torch.testing.assert_close(got_w, want_w)


def test_top_k_becomes_n_when_fewer_experts_remain_and_config_counts_follow():
    model = tiny_model("olmoe")
    remove_experts(model, {s.layer: [3] for s in find_routers(model)})
    changed = update_config(model.config, 8, 1, 2)
    assert changed == {"num_experts": (8, 1), "num_experts_per_tok": (2, 1)}
    assert model.config.num_experts == 1 and model.config.num_experts_per_tok == 1
    site = find_routers(model)[0]
    assert site.router.top_k == 1 and site.experts.num_experts == 1
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert out.shape == (1, 3, model.config.vocab_size) and torch.isfinite(out).all()


def test_bad_kept_sets_are_refused_in_one_line():
    model = tiny_model("deepseek_v3")
    layer = find_routers(model)[0].layer
    with pytest.raises(RoutelensError, match="groups of 4 experts"):
        remove_experts(model, {layer: [0, 1, 2, 3, 4]})  # 4 + 1: the groups would differ
    with pytest.raises(RoutelensError, match="outside 0..7"):
        remove_experts(model, {layer: [0, 9]})
    with pytest.raises(RoutelensError, match="keep no expert"):
        remove_experts(model, {layer: []})
    with pytest.raises(RoutelensError, match="not a MoE layer"):
        remove_experts(model, {0: [1, 2]})  # layer 0 is dense (first_k_dense_replace)


def test_families_whose_experts_are_not_sliced_per_expert_say_why():
    from routelens.models.tiny import build

    dbrx = build("dbrx")
    reason = why_not_prunable(find_routers(dbrx)[0])
    assert reason is not None and "not (E = 4, ...)" in reason
    with pytest.raises(RoutelensError, match="cannot remove experts"):
        remove_experts(dbrx, {find_routers(dbrx)[0].layer: [0, 1]})
