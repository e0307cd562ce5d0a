"""Registry of the MoE families routelens can record, one small adapter per family.

Each adapter names the family's router class (the one transformers lists in the model's
`_can_record_outputs["router_logits"]`), says in one line how that router selects and weights
experts, and reads the router's forward output into `(top_k_index, top_k_weights, logits)`.
Most families return `(router_logits, top_k_weights, top_k_index)` and need nothing more; the
adapters below exist only where a family differs. Nothing here recomputes a selection the
model already made, except where the router exposes logits only (DBRX), and there the model's
own routing method is called on those logits.

`describe_model` walks a model once, finds its router modules, and derives the `RoutingSpec`
(true decoder-layer indices, E, k, parameters of one expert) from the modules themselves, so
dense layers mixed with MoE layers (Jamba, Qwen2-MoE `mlp_only_layers`, DeepSeek
`first_k_dense_replace`, Llama4 `moe_layers`) need no per-family bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from routelens.errors import UnsupportedModelError

# (index (tokens, k), weights (tokens, k), logits (tokens, E))
RouterReading = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Reader = Callable[[nn.Module, nn.Module, object], RouterReading]

# A router's decoder layer: `model.layers.7.mlp.gate`, DBRX `transformer.blocks.7.ffn.router`.
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks|h)\.(\d+)\.")


class Scoring(StrEnum):
    """How a family turns router logits into the full per-expert distribution (`probs`)."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.softmax(dim=-1) if self is Scoring.SOFTMAX else logits.sigmoid()


@dataclass(frozen=True)
class RoutingSpec:
    """What routelens records from one model: its MoE layers and routing rule."""

    family: str  # e.g. "mixtral", "deepseek_v3"
    rule: str  # one line: how selection and weights are computed
    moe_layers: list[int]  # true decoder-layer indices of the MoE layers (dense layers skipped)
    num_experts: int  # routed experts E (shared experts not counted)
    top_k: int  # experts chosen per token
    expert_params: int  # parameters of ONE routed expert, from the experts module's weight shapes

    def __post_init__(self):
        assert self.moe_layers == sorted(set(self.moe_layers)), self.moe_layers
        assert 1 <= self.top_k <= self.num_experts, (self.top_k, self.num_experts)


@dataclass(frozen=True)
class FamilyAdapter:
    """How to read one family's router."""

    family: str  # routelens' name for the family (the HF model_type of its canonical model)
    router: str  # class name of the router module, as in `_can_record_outputs`
    rule: str  # one line, stored in the trace manifest
    scoring: Scoring  # full distribution for `probs`
    read: Reader  # (router, owner MoE block, router output) -> (index, weights, logits)
    best_first: bool = True  # False where the router's top-k is unsorted: take() sorts by weight


def _read_triple(router: nn.Module, owner: nn.Module, output) -> RouterReading:
    """`(router_logits, top_k_weights, top_k_index)`, the transformers 5 router convention."""
    logits, weights, index = output
    return index, weights, logits


def _read_llama4(router: nn.Module, owner: nn.Module, output) -> RouterReading:
    """Llama4's router returns `(router_scores (tokens, E), router_logits)`: sigmoid of the top-k
    logits scattered into a (tokens, E) matrix that scales each expert's *input*. The indices
    are not returned, so the router's own `torch.topk(router_logits, top_k, dim=1)` is repeated
    on the very tensor it ran on (deterministic, same op: the same indices, best first)."""
    scores, logits = output
    index = torch.topk(logits, router.top_k, dim=1).indices
    return index, scores.gather(1, index), logits


def _read_dbrx(router: nn.Module, owner: nn.Module, output) -> RouterReading:
    """DBRX's router module exposes logits only; selection happens in the FFN's
    `route_tokens_to_experts` (softmax -> top-k -> divide by the p-norm of the k). Calling that
    same method on the logits applies the family's own rule, so it follows upstream changes."""
    weights, index = owner.route_tokens_to_experts(output)
    return index, weights, output


def _adapter(family: str, router: str, rule: str, scoring: Scoring = Scoring.SOFTMAX, *, read: Reader = _read_triple,
             best_first: bool = True) -> FamilyAdapter:  # fmt: skip
    return FamilyAdapter(family, router, rule, scoring, read, best_first)


_SOFTMAX_RENORM = "fp32 softmax over E -> top-k -> renormalise over the k"
_SOFTMAX_MAYBE_RENORM = "fp32 softmax over E -> top-k -> renormalise only if norm_topk_prob={norm}"

ADAPTERS: tuple[FamilyAdapter, ...] = (
    _adapter("mixtral", "MixtralTopKRouter", _SOFTMAX_RENORM),
    _adapter("qwen2_moe", "Qwen2MoeTopKRouter", _SOFTMAX_MAYBE_RENORM + "; plus a sigmoid-gated shared expert"),
    _adapter("qwen3_moe", "Qwen3MoeTopKRouter", _SOFTMAX_MAYBE_RENORM),
    _adapter("olmoe", "OlmoeTopKRouter", _SOFTMAX_MAYBE_RENORM),
    _adapter("phimoe", "PhimoeTopKRouter", "sparsemixer top-2: first = argmax of logits, second = argmax of the "
             "rest; each weight = softmax over the logits within 2*router_jitter_noise (relative) of that choice, "
             "taken at it"),  # fmt: skip
    _adapter("deepseek_v2", "DeepseekV2TopkRouter", "fp32 softmax over E -> top-k ({topk_method}; "
             "group_limited_greedy keeps the topk_group groups of highest max score) -> "
             "x routed_scaling_factor={scale}, no renormalisation; plus shared experts",
             best_first=False),  # fmt: skip
    _adapter("deepseek_v3", "DeepseekV3TopkRouter", "sigmoid scores; selection on scores + e_score_correction_bias, "
             "best topk_group groups by top-2 sum; weights = unbiased scores, renormalised if norm_topk_prob={norm}, "
             "x routed_scaling_factor={scale}; plus shared experts", Scoring.SIGMOID, best_first=False),  # fmt: skip
    _adapter("gpt_oss", "GptOssTopKRouter", "top-k of biased logits -> softmax over the k"),
    _adapter("granitemoe", "GraniteMoeTopKRouter", "top-k of logits -> softmax over the k"),
    _adapter("dbrx", "DbrxRouter", "softmax over E -> top-k -> divide by the p-norm of the k "
             "(p=moe_normalize_expert_weights={p})", read=_read_dbrx),  # fmt: skip
    _adapter("jamba", "JambaTopKRouter", "fp32 softmax over E -> top-k, no renormalisation"),
    _adapter("llama4", "Llama4Router", "top-k of logits -> sigmoid of the k logits, scaling the expert's input; "
             "plus a shared expert", Scoring.SIGMOID, read=_read_llama4),  # fmt: skip
)
BY_ROUTER: dict[str, FamilyAdapter] = {a.router: a for a in ADAPTERS}
SUPPORTED = tuple(a.family for a in ADAPTERS)


@dataclass(frozen=True)
class RouterSite:
    """One router module in a model, with the MoE block that owns it."""

    layer: int  # true decoder-layer index
    name: str  # qualified module name, e.g. "model.layers.3.mlp.gate"
    router: nn.Module
    owner: nn.Module  # the MoE block holding `router` and `experts`
    adapter: FamilyAdapter


def _architecture(model: nn.Module) -> str:
    archs = getattr(getattr(model, "config", None), "architectures", None)
    return archs[0] if archs else type(model).__name__


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every router module of a supported family in `model`, ordered by decoder layer."""
    modules = dict(model.named_modules())
    sites = []
    for name, module in modules.items():
        adapter = BY_ROUTER.get(type(module).__name__)
        if adapter is None:
            continue
        layer = _LAYER_RE.search(name)
        assert layer is not None, f"router {name} sits outside a decoder layer"
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else model
        sites.append(RouterSite(int(layer.group(1)), name, module, owner, adapter))
    if not sites:
        raise UnsupportedModelError(
            f"{_architecture(model)} has no MoE layer routelens can record; supported: {', '.join(SUPPORTED)}. "
            "Pass a Mixture-of-Experts causal LM of one of these families."
        )
    families = {s.adapter.family for s in sites}
    assert len(families) == 1, f"one model mixes router families {families}"
    sites.sort(key=lambda s: s.layer)
    assert len({s.layer for s in sites}) == len(sites), [s.name for s in sites]
    return sites


def _top_k(site: RouterSite) -> int:
    return int(getattr(site.router, "top_k", None) or site.owner.top_k)


def describe_model(model: nn.Module) -> RoutingSpec:
    """The routing routelens will record from `model`: family, rule, MoE layers, E, k, expert size.

    Raises `UnsupportedModelError` naming the architecture when the model has no known router.
    """
    sites = find_routers(model)
    first = sites[0]
    experts = first.owner.experts
    num_experts = int(experts.num_experts)
    # Fused expert weights carry E on their first axis (DBRX stacks E blocks on axis 0), so one
    # expert's share is the total over E; shared experts live outside `experts` and are not counted.
    total = sum(p.numel() for p in experts.parameters())
    assert total % num_experts == 0, (total, num_experts)
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rule = first.adapter.rule.format(
        norm=getattr(text, "norm_topk_prob", None),
        scale=getattr(text, "routed_scaling_factor", None),
        topk_method=getattr(text, "topk_method", None),
        p=getattr(getattr(text, "ffn_config", None), "moe_normalize_expert_weights", None),
    )
    return RoutingSpec(
        family=first.adapter.family, rule=rule, moe_layers=[s.layer for s in sites],
        num_experts=num_experts, top_k=_top_k(first), expert_params=total // num_experts,
    )  # fmt: skip
