"""Conformance: every MoE family of the installed transformers, recorded exactly on padded batches.

The families are enumerated from transformers itself (`routelens.models.catalog`: model types
whose model classes record `router_logits`), so a transformers upgrade that adds a MoE family
adds a case here, and that case fails until the family records exactly or is listed with its
reason in `routelens.models.unsupported`. Each family is built tiny from its config class alone
(`routelens.models.tiny`), run on a right-padded and a left-padded batch, and the recording is
compared with what every experts module was actually called with, captured by the test's own
hooks (found by module name, not by the recorder's discovery).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from routelens.capture import RoutingRecorder, describe_model
from routelens.models.catalog import moe_families
from routelens.models.overrides import OVERRIDES
from routelens.models.tiny import VOCAB, build
from routelens.models.unsupported import UNSUPPORTED

FAMILIES = {f.model_type: f for f in moe_families()}
RECORDED = sorted(set(FAMILIES) - set(UNSUPPORTED))


def test_the_scan_finds_the_families_routelens_documented_first():
    assert len(FAMILIES) >= 12
    known = {
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "olmoe",
        "phimoe",
        "deepseek_v2",
        "deepseek_v3",
        "gpt_oss",
        "granitemoe",
        "dbrx",
        "jamba",
        "llama4",
    }
    assert known <= set(RECORDED)


def test_every_listed_family_exists_and_has_a_reason():
    stale = sorted(set(UNSUPPORTED) - set(FAMILIES))
    assert not stale, f"listed as unsupported but not a MoE family of this transformers: {stale}"
    assert all(len(reason) > 20 and "\n" not in reason for reason in UNSUPPORTED.values())


def _batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A right-padded and a left-padded batch of random ids (B, T) with their attention masks."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([12, 9, 5])
    width = int(lengths.max())
    out = []
    for left in (False, True):
        pos = torch.arange(width)[None, :]
        mask = (pos >= width - lengths[:, None]) if left else (pos < lengths[:, None])
        ids = torch.randint(3, VOCAB, (len(lengths), width), generator=gen).masked_fill(~mask, 0)
        out.append((ids, mask.long()))
    return out


def _experts_calls(model) -> tuple[dict[str, list], list]:
    """Forward pre-hooks on every module named `experts`: per module, the (index, weights) of each call."""
    seen: dict[str, list] = {}
    handles = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != "experts":
            continue
        names = [p for p in inspect.signature(type(module).forward).parameters if p != "self"]

        def hook(module, args, kwargs, name=name, names=names):
            bound = dict(zip(names, args)) | kwargs
            # (hidden_states, top_k_index, top_k_weights); Llama4's experts take their scaled input only
            tensors = [bound[n] for n in names[1:3] if torch.is_tensor(bound.get(n))] or [bound[names[0]]]
            seen.setdefault(name, []).append([t.detach().clone() for t in tensors])

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def _hook_block_inputs(model, seen: dict, handles: list) -> None:
    """Llama4: also keep each MoE block's input, in `seen["_block_in"]` (what `_llama4_truth` needs)."""
    seen["_block_in"] = {}
    for name, _module in model.named_modules():
        if name.endswith(".experts"):
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            handles.append(
                owner.register_forward_pre_hook(
                    lambda m, a, n=name: seen["_block_in"].setdefault(n, []).append(a[0].detach().clone())
                )
            )


def _llama4_truth(model, calls: dict[str, list]) -> dict[str, list]:
    """Llama4's experts get `routed_in` (E*T, H): hidden * score for each expert, zero for the
    experts not chosen. The choice is the non-zero rows; the weight is the scale of each row."""
    truth = {}
    blocks_in = calls.pop("_block_in")
    for name, per_call in calls.items():
        block = model.get_submodule(name.rsplit(".", 1)[0])
        out = []
        for (routed,), hidden in zip(per_call, blocks_in[name]):
            hidden = hidden.reshape(-1, hidden.shape[-1]).float()
            routed = routed.float().view(block.num_experts, hidden.shape[0], -1)
            scale = ((routed * hidden).sum(-1) / (hidden * hidden).sum(-1)).T  # (T, E)
            chosen = (routed.abs().sum(-1) > 0).T
            weights, index = scale.masked_fill(~chosen, -1.0).sort(dim=-1, descending=True)
            out.append([index[:, : block.top_k], weights[:, : block.top_k]])
        truth[name] = out
    return truth


# Families whose block rewrites the router's choice before its experts see it; the router's output
# is then the choice (LongCat-Flash from transformers 5.25 hands zero-computation choices to the
# experts as real ids with weight 0 and adds their identity itself).
ROUTER_IS_THE_CHOICE = {"longcat_flash"}


def _router_calls(model, handles: list) -> dict[str, list]:
    """Forward hooks on every module named `router` beside an `experts`: (index, weights) per call."""
    seen: dict[str, list] = {}
    for name, _module in model.named_modules():
        if name.endswith(".experts"):
            router = model.get_submodule(name.rsplit(".", 1)[0] + ".router")
            handles.append(
                router.register_forward_hook(
                    lambda m, a, out, n=name: seen.setdefault(n, []).append(
                        [out[2].detach().clone(), out[1].detach().clone()]
                    )
                )
            )
    return seen


def _router_truth(model, experts_calls: dict, num_experts: int, routers: dict) -> dict[str, list]:
    """The router's choices, after checking that the experts got each real choice with its weight and
    every other slot (a zero-computation choice) with weight 0."""
    for name, calls in routers.items():
        for (index, weights), (given_i, given_w) in zip(calls, experts_calls[name]):
            real = index < num_experts
            assert torch.equal(given_i[real], index[real]) and torch.equal(given_w[real], weights[real])
            assert bool((given_w[~real] == 0).all()) or torch.equal(given_i, index)
    return routers


def _canonical(index: torch.Tensor, weights: torch.Tensor, empty: int):
    """The k slots of each token ordered by expert id with empty slots dropped, to compare choices."""
    index, weights = index.long(), weights.float()
    order = index.argsort(dim=-1)
    index, weights = index.gather(-1, order), weights.gather(-1, order)
    keep = index != empty
    return index[keep], weights[keep], keep.sum(-1)


@pytest.mark.parametrize("model_type", RECORDED)
def test_recorded_routing_equals_what_the_experts_computed_with(model_type):
    family = FAMILIES[model_type]
    model = build(model_type, family.module)
    spec = describe_model(model)
    seen, handles = _experts_calls(model)
    llama4 = spec.family == "llama4"
    if llama4:  # the experts see scaled inputs; the reference needs the block's input too
        _hook_block_inputs(model, seen, handles)
    routers = _router_calls(model, handles) if spec.family in ROUTER_IS_THE_CHOICE else {}
    got = []
    try:
        with torch.no_grad(), RoutingRecorder(model, spec) as rec:
            for ids, mask in _batches():
                model(input_ids=ids, attention_mask=mask)
                got.append(rec.take())
    finally:
        for h in handles:
            h.remove()
    truth = _llama4_truth(model, seen) if llama4 else seen
    if spec.family in ROUTER_IS_THE_CHOICE:
        truth = _router_truth(model, seen, spec.num_experts, routers)
    # expert sets no text token reached (ERNIE-4.5-VL's vision experts, called with no token) are not layers
    truth = {n: calls for n, calls in truth.items() if any(c[0].numel() for c in calls)}
    # every experts module that ran is a recorded layer, in layer order
    called = sorted(truth, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    assert len(called) == len(spec.moe_layers), (called, spec.moe_layers)
    empty = spec.no_expert_id
    for b, routing in enumerate(got):
        tokens = _batches()[b][0].numel()
        assert routing.experts.shape == (tokens, len(spec.moe_layers), spec.top_k)
        assert routing.experts.dtype == torch.int64 and routing.weights.dtype == torch.float32
        assert int(routing.experts.min()) >= 0 and int(routing.experts.max()) <= empty
        for layer, name in enumerate(called):
            index, weights = truth[name][b]
            ref_i, ref_w, ref_n = _canonical(index.reshape(tokens, -1), weights.reshape(tokens, -1), empty)
            rec_i, rec_w, rec_n = _canonical(routing.experts[:, layer], routing.weights[:, layer], empty)
            where = f"{model_type} layer {spec.moe_layers[layer]} batch {b}"
            assert torch.equal(rec_n, ref_n), f"{where}: experts per token differ"
            assert torch.equal(rec_i, ref_i), f"{where}: experts differ"
            tol = dict(rtol=1e-5, atol=1e-6) if llama4 else dict(rtol=0, atol=0)
            torch.testing.assert_close(rec_w, ref_w, **tol, msg=f"{where}: weights differ")


# Families whose weights are not one factor per token times the scoring at the chosen experts, and why
# (the library's overrides table, which the verifier reads too).
WEIGHTS_NOT_FROM_SCORES = {t: o.weights for t, o in OVERRIDES.items() if o.weights}


@pytest.mark.parametrize("model_type", RECORDED)
def test_recorded_probs_are_the_routers_own_scores(model_type):
    """`probs` (store_probs) is the family's full per-expert scoring: values in [0, 1], a distribution
    where the family scores by softmax, never a softmax of a softmax, and where the family's weights
    derive from it, each token's weights are the scores of its chosen experts times one factor
    (renormalisation, scaling) -- so a wrong scoring rule fails here."""
    from routelens.capture import Scoring
    from routelens.models.families import find_routers

    model = build(model_type, FAMILIES[model_type].module)
    spec = describe_model(model)
    raw, handles = [], []
    for site in find_routers(model):
        handles.append(
            site.router.register_forward_hook(
                lambda _m, _i, out, _at=site.logits_index: raw.append(
                    (out[_at] if isinstance(out, tuple) else out).detach()
                )
            )
        )
    ids, mask = _batches()[0]
    try:
        with torch.no_grad(), RoutingRecorder(model, spec, store_probs=True) as rec:
            model(input_ids=ids, attention_mask=mask)
            got = rec.take()
    finally:
        for h in handles:
            h.remove()
    E = spec.num_experts
    assert got.probs.shape == (ids.numel(), len(spec.moe_layers), E) and torch.isfinite(got.probs).all()
    # slot-major for the per-layer checks below: (L, T, E), (L, T, k), (L, T, k)
    probs, experts, weights = (t.transpose(0, 1) for t in (got.probs, got.experts, got.weights))
    assert probs.min() >= 0 and (rec.scoring is Scoring.SQRTSOFTPLUS or probs.max() <= 1 + 1e-6)
    already_distributions = all(
        r.min() >= 0 and torch.allclose(r.float().sum(-1), torch.ones(r.shape[:-1]), atol=1e-4) for r in raw
    )
    if already_distributions:  # the router hands out probabilities: they are `probs` as they are
        assert rec.scoring is Scoring.PROBS, (
            f"{model_type}: the router outputs probabilities; softmax again would flatten them"
        )
    distribution = rec.scoring in (Scoring.SOFTMAX, Scoring.PROBS)  # sigmoid and sqrt-softplus scores are not
    # ... and a softmax that also scores zero-computation experts or a null choice leaves less than 1 to the routed ones
    if distribution and not spec.num_zero_experts and model_type not in ("zaya", "inkling_mm_model"):
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]), atol=1e-4, rtol=0)
    if model_type in WEIGHTS_NOT_FROM_SCORES or spec.top_k < 2:  # with one choice there is no ratio to compare
        return
    routed = [i for i, layer in enumerate(spec.moe_layers) if layer not in spec.hash_routed_layers]
    real = experts[routed] < E
    scores = probs[routed].gather(-1, experts[routed].clamp(max=E - 1))
    factor = torch.where(real & (scores > 1e-6), weights[routed] / scores.clamp(min=1e-12), torch.nan)
    lo = torch.nan_to_num(factor, nan=float("inf")).amin(-1)
    hi = torch.nan_to_num(factor, nan=-float("inf")).amax(-1)
    checked = real.sum(-1) >= 2
    assert checked.any()
    spread = ((hi - lo).abs() / hi.abs().clamp(min=1e-6))[checked]
    assert spread.max() <= 1e-3, f"{model_type}: weights are not the chosen experts' scores times one factor per token"
