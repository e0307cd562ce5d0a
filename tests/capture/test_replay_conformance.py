"""Conformance, the replay column: every MoE family routelens records, replayed (`routelens.replay`).

For each family, tiny (k = 2 and k = 3), three checks against ground truth the replay does not share:

  (a) replaying the ids the router handed its block, in their order, gives outputs bit-equal to the
      plain forward in float32; in the trace's order (first choice first) the same routing and
      outputs within 1e-6;
  (b) a planted routing (random distinct ids per token and layer) reaches the block exactly, with
      weights equal to the family's rule at those ids, recomputed here from the router's logits by
      the family's math written out in `RULES` (never by calling the family's code);
  (c) `loss.backward()` under replay gives the router the gradient of the family's gating at the
      forced ids (compared with autograd through the reference rule), non-zero for forced ids the
      router itself would not have chosen.

Families replay refuses are listed with their reason in `routelens.models.replay.REFUSED`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import routelens
from routelens.models.catalog import moe_families
from routelens.models.families import find_routers, text_config
from routelens.models.replay import REFUSED
from routelens.models.tiny import VOCAB, build
from routelens.models.unsupported import UNSUPPORTED

FAMILIES = {f.model_type: f for f in moe_families()}
REPLAYED = sorted(set(FAMILIES) - set(UNSUPPORTED) - set(REFUSED))
TOP_K_FIELDS = ("num_experts_per_tok", "moe_topk", "moe_top_k", "top_k", "num_experts_per_token", "top_k_experts")
TOP1_ONLY = {"zaya"}  # its tiny override pins top-1 (the family routes to one expert and a skip class)


@dataclass(frozen=True)
class Rule:
    """A family's weights at chosen ids from its router's logits lg (tokens, n): score(lg) at the ids,
    divided by their sum where `renorm`, times `scale`. `renorm` / `scale` name a config field where
    the family reads one."""

    score: str  # "softmax" over all ids, "sigmoid", "sqrtsoftplus", "probs" (the router outputs them)
    renorm: bool | str = False
    scale: float | str = 1.0
    eps: float = 0.0  # added to the renormalising sum


SOFTMAX_RENORM = Rule("softmax", True)
SOFTMAX_PLAIN = Rule("softmax")
SIGMOID_RENORM = Rule("sigmoid", True)

# Written from each family's modeling code (transformers 5.25): scoring -> [renormalise] -> [scale].
RULES: dict[str, Rule] = {
    **dict.fromkeys(
        ["aria", "ernie4_5_moe", "ernie4_5_vl_moe", "gpt_oss", "granitemoe", "granitemoe_swa", "granitemoehybrid"],
        SOFTMAX_RENORM,
    ),
    # gpt-oss / granite: top-k of the logits, softmax over the k = softmax over E renormalised over the k
    **dict.fromkeys(["granitemoeshared", "hunyuan_v1_moe", "minimax", "mixtral", "qwen3_5_moe"], SOFTMAX_RENORM),
    **dict.fromkeys(["mistral_large4", "qwen3_vl_moe"], SOFTMAX_RENORM),
    **dict.fromkeys(
        ["cohere2_moe", "lara_mini", "mellum", "mistral4", "qwen3_next", "qwen3_omni_moe", "qwen4_exp"],
        Rule("softmax", "norm_topk_prob"),
    ),
    **dict.fromkeys(["flex_olmo", "olmoe", "qwen2_moe", "qwen3_moe"], Rule("softmax", "norm_topk_prob")),
    "openai_privacy_filter": Rule("softmax", True, "top_k"),  # softmax over the k, divided by k
    **dict.fromkeys(["jamba", "zaya"], SOFTMAX_PLAIN),  # zaya: softmax over E + a skip class
    **dict.fromkeys(["deepseek_v2", "deepseek_ocr2", "unlimited_ocr"], Rule("softmax", False, "routed_scaling_factor")),
    "longcat_flash": Rule("softmax", False, "routed_scaling_factor"),  # over E + Z, zero experts included
    # DeepSeek-V3 style: sigmoid scores without the selection bias, renormalised, times a scale
    **dict.fromkeys(
        ["axk1", "axk2", "bailing_hybrid", "deepseek_v3", "deepseek_v32", "exaone_moe", "glm4_moe", "glm4_moe_lite"],
        Rule("sigmoid", "norm_topk_prob", "routed_scaling_factor"),
    ),
    **dict.fromkeys(
        ["glm4v_moe", "glm5_next", "glm_moe_dsa", "hy_v4", "hy_v4_vl", "kimi_linear", "minicpm5_moe", "lfm2_moe"],
        Rule("sigmoid", "norm_topk_prob", "routed_scaling_factor"),
    ),
    **dict.fromkeys(
        ["mimo_v2_flash", "nemotron_h", "solar_open", "dots1"],
        Rule("sigmoid", "norm_topk_prob", "routed_scaling_factor"),
    ),
    **dict.fromkeys(["inkling2", "inkling2_loop"], Rule("sigmoid", True, "routed_scaling_factor")),
    "lfm2_moe": Rule("sigmoid", "norm_topk_prob", "routed_scaling_factor", eps=1e-6),
    "afmoe": Rule("sigmoid", True, "route_scale"),
    "ergo": Rule("sigmoid", True, "moe_routed_scaling_factor"),
    "hy_v3": Rule("sigmoid", True, "router_scaling_factor"),
    **dict.fromkeys(["beam", "flint"], Rule("sigmoid", "norm_topk_prob")),  # beam ignores routed_scaling_factor
    **dict.fromkeys(["dots3_note", "laguna", "minimax_m2", "minimax_m3_vl", "muse_spark", "step3p7"], SIGMOID_RENORM),
    **dict.fromkeys(["kolibri1", "kolibri1_1"], Rule("sigmoid", "norm_topk_prob")),
    "deepseek_v4": Rule("sqrtsoftplus", True, "routed_scaling_factor"),  # hash layers weigh their ids alike
    # the router outputs softmax probabilities; renormalised over the k, times a learned per-expert scale
    **dict.fromkeys(["gemma4", "diffusion_gemma"], Rule("probs", True, "per_expert_scale")),
    "dbrx": Rule("softmax", "moe_normalize_expert_weights"),  # divided by the p-norm of the k
    "llama4": Rule("sigmoid"),  # sigmoid of the chosen logits, scattered into (tokens, E)
    "inkling_mm_model": Rule("sigmoid", True, "route_scale"),  # over the k and the shared experts' logits
}


def _setting(model, site, name):
    """A rule's field from the router, its block or the text config (`top_k` from the router)."""
    for obj in (site.router, site.owner, text_config(model), getattr(text_config(model), "ffn_config", None)):
        if obj is not None and hasattr(obj, name):
            return getattr(obj, name)
    raise AssertionError(f"no {name} on {type(site.router).__name__}")


def reference_weights(model_type, model, site, logits, ids, router_input=None, *, shared=False) -> torch.Tensor:
    """The family's weights at `ids` (tokens, k) from the router's logits (tokens, n), by `RULES`
    (Inkling: with `shared`, its shared experts' gammas too, (tokens, k + shared))."""
    rule = RULES[model_type]
    lg = logits.float().reshape(-1, logits.shape[-1])
    if model_type == "inkling_mm_model":  # normalised with the shared experts' logits, from the router's input
        full = torch.nn.functional.linear(router_input.reshape(lg.shape[0], -1).float(), site.router.weight.float())
        both = torch.cat([lg.gather(-1, ids), full[:, lg.shape[-1] :]], dim=-1).sigmoid()
        w = both / both.sum(-1, keepdim=True) * site.router.route_scale * site.router.global_scale.float()
        return w if shared else w[:, : ids.shape[-1]]
    scores = {
        "softmax": lambda: lg.softmax(-1),
        "sigmoid": lambda: lg.sigmoid(),
        "sqrtsoftplus": lambda: torch.nn.functional.softplus(lg).sqrt(),
        "probs": lambda: lg,
    }[rule.score]()
    w = scores.gather(-1, ids)
    renorm = rule.renorm if isinstance(rule.renorm, bool) else _setting(model, site, rule.renorm)
    if model_type == "dbrx":
        return w if renorm is None else w / w.norm(p=renorm, dim=-1, keepdim=True)
    if renorm:
        w = w / (w.sum(-1, keepdim=True) + rule.eps)
    scale = rule.scale if isinstance(rule.scale, float) else _setting(model, site, rule.scale)
    if rule.scale == "per_expert_scale":
        return w * scale[ids]
    return w / scale if rule.scale == "top_k" else w * scale


# -- the tiny models ---------------------------------------------------------------------------------


def _top_k_overrides(model_type: str, k: int) -> dict:
    from routelens.models.tiny import tiny_config

    config = tiny_config(model_type)
    if model_type == "dbrx":
        return {"ffn_config": {**config.ffn_config.to_dict(), "moe_top_k": k}}
    fields = {name for name in TOP_K_FIELDS if isinstance(getattr(config, name, None), (int, list))}
    return {n: ([k] * len(v) if isinstance(v := getattr(config, n), list) else k) for n in fields}


def tiny(model_type: str, k: int):
    """The family's tiny model with top-k `k`: router weights that initialise to zeros made random (all
    routing would tie), hash tables filled with distinct ids."""
    model = build(model_type, FAMILIES[model_type].module, **_top_k_overrides(model_type, k))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for site in find_routers(model):
            for name, p in site.router.named_parameters():
                if p.dim() >= 2 and name.endswith("weight") and not p.any():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            table = getattr(site.router, "tid2eid", None)
            if table is not None:
                rows = [torch.randperm(site.num_experts, generator=gen)[: table.shape[1]] for _ in range(len(table))]
                table.copy_(torch.stack(rows))
    return model


CASES = [(t, k) for t in REPLAYED for k in ((1,) if t in TOP1_ONLY else (2, 3))]


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-k{k}" for t, k in CASES])
def case(request):
    """(model_type, k, tiny model): module-scoped, so the three checks of a case share one build."""
    model_type, k = request.param
    return model_type, k, tiny(model_type, k)


B, T = 2, 6


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _output(model, ids) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


# Routers whose returned logits are a reshaped view the family never scores from: the submodule whose
# output is the tensor it does score from (ZAYA returns `router_logits.reshape(-1, E + 1)`).
LOGITS_MODULE = {"ZayaRouter": "router_mlp"}


class _Routers:
    """Test hooks on every site: the router's input and output of the last call (not detached), and the
    (index, weights) the family hands its experts (DBRX chooses in its block: read at the experts)."""

    def __init__(self, model, sites):
        self.sites, self.inputs, self.outputs, self.experts, self.scored, self._handles = sites, {}, {}, {}, {}, []
        for slot, site in enumerate(sites):
            self._handles.append(
                site.router.register_forward_pre_hook(lambda m, a, s=slot: self.inputs.__setitem__(s, a[0]))
            )
            self._handles.append(
                site.router.register_forward_hook(lambda m, a, o, s=slot: self.outputs.__setitem__(s, o))
            )
            self._handles.append(
                site.experts.register_forward_pre_hook(
                    lambda m, a, kw, s=slot: self.experts.__setitem__(s, (a + tuple(kw.values()))[1:3]),
                    with_kwargs=True,
                )
            )
            if (inner := LOGITS_MODULE.get(type(site.router).__name__)) is not None:
                module = site.router.get_submodule(inner)
                self._handles.append(
                    module.register_forward_hook(lambda m, a, o, s=slot: self.scored.__setitem__(s, o))
                )

    def remove(self):
        for h in self._handles:
            h.remove()

    def logits(self, slot):
        if slot in self.scored:
            return self.scored[slot]
        out = self.outputs[slot]
        return out[self.sites[slot].logits_index] if isinstance(out, tuple) else out

    def choice(self, model_type, slot) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (tokens, k), weights (tokens, k)) the router (or DBRX's block) handed on."""
        out = self.outputs[slot]
        k = self.sites[slot].top_k
        if model_type == "dbrx":
            index, weights = self.experts[slot]
        elif model_type == "llama4":  # (scores (tokens, E), logits): the chosen are the non-zero scores
            scores = out[0]
            index = scores.detach().topk(k, dim=-1).indices
            return index, scores.gather(-1, index)
        else:
            index, weights = out[2], out[1]
        return index.reshape(-1, k).long(), weights.reshape(-1, k)


def _own(model_type, model, sites, ids):
    """The plain forward's output and the routing its routers handed on, (B, T, L, k) in their order."""
    routers = _Routers(model, sites)
    try:
        with torch.no_grad():
            plain = _output(model, ids)
        choices = [routers.choice(model_type, s) for s in range(len(sites))]
    finally:
        routers.remove()
    index = torch.stack([i for i, _ in choices], 1).reshape(B, T, len(sites), -1)
    weights = torch.stack([w.float() for _, w in choices], 1).reshape(B, T, len(sites), -1)
    return plain, index, weights


def test_every_replayed_family_has_a_reference_rule():
    assert sorted(set(REPLAYED) - set(RULES)) == []
    assert sorted(set(RULES) - set(REPLAYED)) == []


def test_refused_families_are_refused_with_their_reason():
    assert set(REFUSED) <= set(FAMILIES) - set(UNSUPPORTED)
    for model_type, reason in REFUSED.items():
        model = build(model_type, FAMILIES[model_type].module)
        with pytest.raises(routelens.RoutelensError, match=f"{model_type} cannot be replayed exactly") as info:
            with routelens.replay(model, torch.zeros(1, 1, 4, 2, dtype=torch.long)):
                pass
        assert reason in str(info.value) and "\n" not in str(info.value)


def test_replaying_the_own_routing_gives_the_plain_forward(case):
    model_type, k, model = case
    sites = find_routers(model)
    assert all(s.top_k == k for s in sites), [s.top_k for s in sites]
    ids = _ids()
    plain, index, weights = _own(model_type, model, sites, ids)
    with torch.no_grad(), routelens.replay(model, index) as rep:
        again = _output(model, ids)
    assert rep.calls == [1] * len(sites)
    assert torch.equal(again, plain), f"{model_type}: replaying the own routing changed the output"
    # the trace's order: first choice first (by weight, ties by id)
    order = (weights * 4 - index.float() * 1e-6).argsort(dim=-1, descending=True)
    trace_order = index.gather(-1, order)
    _, index2, _ = _own(model_type, model, sites, ids)
    assert torch.equal(index2, index)
    routers = _Routers(model, sites)
    try:
        with torch.no_grad(), routelens.replay(model, trace_order):
            reordered = _output(model, ids)
        got = torch.stack([routers.choice(model_type, s)[0] for s in range(len(sites))], 1)
    finally:
        routers.remove()
    assert torch.equal(got.sort(-1).values, index.reshape(B * T, len(sites), -1).sort(-1).values)
    # summed in another order: within 1e-6 of the output's scale; Muse Spark normalises each expert's
    # output (RMS norms before and after the experts), which amplifies the reordered rounding to ~2e-6
    tol = 1e-5 if model_type == "muse_spark" else 1e-6
    torch.testing.assert_close(reordered, plain, rtol=tol, atol=tol * float(plain.abs().max()))


def _planted(model, sites, seed: int = 3) -> torch.Tensor:
    """Random distinct ids per token and layer (B, T, L, k), zero-computation experts included."""
    gen = torch.Generator().manual_seed(seed)
    ids = [
        torch.stack(
            [torch.randperm(s.num_experts + s.num_zero_experts, generator=gen)[: s.top_k] for _ in range(B * T)]
        )
        for s in sites
    ]
    return torch.stack(ids, 1).reshape(B, T, len(sites), -1)


def test_a_planted_routing_reaches_the_block_with_the_familys_weights(case):
    model_type, k, model = case
    sites = find_routers(model)
    ids = _ids(1)
    planted = _planted(model, sites)
    routers = _Routers(model, sites)
    try:
        with torch.no_grad(), routelens.replay(model, planted):
            _output(model, ids)
        for slot, site in enumerate(sites):
            index, weights = routers.choice(model_type, slot)
            want = planted[:, :, slot].reshape(B * T, -1)
            where = f"{model_type} k={k} layer {site.layer}"
            if model_type == "llama4":  # the choice is read back as a set
                assert torch.equal(index.sort(-1).values, want.sort(-1).values), where
                index = want
                weights = routers.outputs[slot][0].gather(-1, want)
            else:
                assert torch.equal(index, want), f"{where}: the block got other ids"
            ref = reference_weights(model_type, model, site, routers.logits(slot), want, routers.inputs[slot])
            torch.testing.assert_close(
                weights.float(), ref, rtol=1e-5, atol=1e-6, msg=lambda m, where=where: f"{where}: weights: {m}"
            )
    finally:
        routers.remove()


def test_the_router_gets_the_gradient_of_its_gating_at_the_forced_ids(case):
    model_type, k, model = case
    sites = find_routers(model)
    ids = _ids(2)
    _, own, _ = _own(model_type, model, sites, ids)
    planted = _planted(model, sites, seed=4)
    routers = _Routers(model, sites)
    grads: dict[int, torch.Tensor] = {}
    try:
        with routelens.replay(model, planted):
            out = _output(model, ids)
            handed = []
            for slot in range(len(sites)):
                w = {"llama4": lambda s: routers.outputs[s][0], "dbrx": lambda s: routers.experts[s][1]}.get(
                    model_type, lambda s: routers.outputs[s][1]
                )(slot)
                w.register_hook(lambda g, s=slot: grads.__setitem__(s, g))
                handed.append(w)
                if model_type == "inkling_mm_model":  # the shared experts' gammas share the normaliser
                    routers.outputs[slot][3].register_hook(lambda g, s=slot: grads.__setitem__(("shared", s), g))
            loss = (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(5))).sum()
            logits = [routers.logits(s) for s in range(len(sites))]
            inputs = [routers.inputs[s] for s in range(len(sites))]
            got = torch.autograd.grad(loss, logits, allow_unused=True, retain_graph=True)
            loss.backward()
    finally:
        routers.remove()
    checked = 0
    for slot, site in enumerate(sites):
        where = f"{model_type} k={k} layer {site.layer}"
        if site.hash_routed and model_type != "deepseek_v4":
            continue
        forced = planted[:, :, slot].reshape(B * T, -1)
        upstream = grads[slot].reshape(B * T, -1)
        if model_type == "llama4":
            upstream = upstream.gather(-1, forced)
        lg = logits[slot].detach().float().requires_grad_(True)
        if model_type == "inkling_mm_model":  # the loss reaches the routed logits through the shared gammas too
            upstream = torch.cat([upstream, grads[("shared", slot)].reshape(B * T, -1)], dim=-1)
            weights = reference_weights(model_type, model, site, lg, forced, inputs[slot].detach(), shared=True)
            ref = torch.autograd.grad((weights * upstream).sum(), lg)[0]
        else:
            ref = torch.autograd.grad((reference_weights(model_type, model, site, lg, forced) * upstream).sum(), lg)[0]
        assert got[slot] is not None, f"{where}: no gradient reaches the router's logits"
        g = got[slot].reshape(B * T, -1).float()
        torch.testing.assert_close(
            g, ref.reshape(B * T, -1), rtol=1e-4, atol=1e-6, msg=lambda m, where=where: f"{where}: gradient: {m}"
        )
        # forced ids the router itself would not have chosen get a gradient on their logit
        drifted = ~(forced[:, :, None] == own[:, :, slot].reshape(B * T, 1, -1)).any(-1)
        at = g.gather(-1, forced)[drifted]
        assert drifted.any() and (at != 0).all(), f"{where}: a drifted choice gets no gradient"
        checked += 1
    assert checked
    router_grads = [p.grad for s in sites for p in s.router.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in router_grads), (
        f"{model_type}: the router's weights got no gradient"
    )
