"""Where routelens records a MoE model's routing, found from the model's structure.

In transformers 5 a MoE block calls `experts(hidden_states, top_k_index, top_k_weights)`: those
inputs are exactly what the experts computed with, so routelens records them with a forward
pre-hook on the experts module. The blocks are found from the model itself: a module named
`experts` whose forward takes (hidden states, indices, weights), beside a router of a class the
model lists in `_can_record_outputs["router_logits"]` (or a hash router, which routes by token
id). A new family that follows this convention needs no code here.

The small `ADAPTERS` table covers families that deviate: Llama 4 scales the experts' *inputs*
(read at its router), and the hand-written one-line rules of the families routelens documented
first. Routers that take top-k with `sorted=False` are detected from their source: the
recorder orders their k by weight, so that the first choice comes first.

`describe_model` derives the `MoESpec` (true decoder-layer indices, E, k per layer, zero
experts, hash-routed layers, parameters of one expert) from the modules, so dense layers mixed
with MoE layers need no per-family bookkeeping. It works on a meta-device skeleton too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import nn

from routelens.errors import RoutelensError, UnsupportedModelError
from routelens.models.catalog import family_name
from routelens.models.rules import class_source, derived_rule

# (index (tokens, k), weights (tokens, k)) read from a router's output, for adapters
Reader = Callable[[nn.Module, nn.Module, object], tuple[torch.Tensor, torch.Tensor]]

# An experts module's decoder layer: `model.layers.7.mlp.experts`, DBRX `transformer.blocks.7.ffn.experts`.
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks|h)\.(\d+)\.")
_ROUTER_NAME = re.compile(r"(Router|Gate|Gating)$")
# Expert sets that only non-text tokens reach (ERNIE-4.5-VL's `vision_moe` beside `text_moe`):
# routelens traces text, so a layer's text experts are its MoE layer.
_OTHER_MODALITY = re.compile(r"(?:^|\.)(?:vision|visual|image|video|audio)[a-z_]*\.")


class Scoring(StrEnum):
    """How a family turns what its router outputs into the full per-expert scores (`probs`)."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    SQRTSOFTPLUS = "sqrtsoftplus"  # DeepSeek-V4: sqrt(softplus(logit)), not bounded by 1
    PROBS = "probs"  # the router already outputs the distribution

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self is Scoring.PROBS:
            return logits
        if self is Scoring.SQRTSOFTPLUS:
            return torch.nn.functional.softplus(logits).sqrt()
        return logits.softmax(dim=-1) if self is Scoring.SOFTMAX else logits.sigmoid()

    @classmethod
    def of_rule(cls, rule: str) -> Scoring:
        """The scoring a derived rule names first ("sigmoid scores -> ..."); softmax otherwise."""
        first = rule.split(" ", 1)[0]
        return cls(first) if first in {s.value for s in (cls.SIGMOID, cls.SQRTSOFTPLUS)} else cls.SOFTMAX


@dataclass(frozen=True)
class MoESpec:
    """What routelens records from one model: its MoE layers and routing rule (docs/glossary.md).

    Layers whose k is below `top_k` are padded with `no_expert_id` and weight 0; ids
    `num_experts .. num_experts + num_zero_experts - 1` are zero-computation experts.
    """

    family: str  # e.g. "mixtral", "deepseek_v3"
    rule: str  # one line: how selection and weights are computed
    moe_layers: list[int]  # true decoder-layer indices of the MoE layers (dense layers skipped)
    num_experts: int  # routed experts E (shared and zero-computation experts not counted)
    top_k: int  # experts chosen per token (the largest k where k differs per layer)
    expert_params: int  # parameters of ONE routed expert, from the experts module's weight shapes
    top_k_per_layer: list[int] = field(default_factory=list)  # k of each MoE layer; filled when empty
    num_zero_experts: int = 0  # zero-computation (identity) experts, ids E .. E+Z-1
    hash_routed_layers: list[int] = field(default_factory=list)  # MoE layers routed by token id

    def __post_init__(self):
        assert self.moe_layers == sorted(set(self.moe_layers)), self.moe_layers
        if not self.top_k_per_layer:
            object.__setattr__(self, "top_k_per_layer", [self.top_k] * len(self.moe_layers))
        assert len(self.top_k_per_layer) == len(self.moe_layers), (self.top_k_per_layer, self.moe_layers)
        assert self.top_k == max(self.top_k_per_layer, default=self.top_k), (self.top_k, self.top_k_per_layer)
        if not 1 <= self.top_k <= self.num_experts + self.num_zero_experts:  # a config a user edited: not an invariant
            raise RoutelensError(
                f"the model's config routes each token to top-k {self.top_k} of {self.num_experts} experts; "
                "set num_experts_per_tok (or top_k) in its config.json to at most the expert count."
            )
        assert self.num_zero_experts >= 0 and set(self.hash_routed_layers) <= set(self.moe_layers)

    @property
    def num_ids(self) -> int:
        """How many expert ids a choice can take: E routed plus Z zero-computation experts."""
        return self.num_experts + self.num_zero_experts

    @property
    def no_expert_id(self) -> int:
        """The id of an empty slot (docs/trace-format.md): one past the last expert, weight 0."""
        return self.num_experts + self.num_zero_experts

    @property
    def id_span(self) -> int:
        """How many distinct ids a kept row can hold, which sizes the stored id type: routed and
        zero-computation experts, plus the empty-slot id where some layer's k is below top_k (a
        masked token's sentinel only ever reaches padding rows, which are never kept)."""
        return self.no_expert_id + (1 if min(self.top_k_per_layer, default=self.top_k) < self.top_k else 0)


RoutingSpec = MoESpec  # its name until the model layer (kept: users' code imports it)

# a router's output carrying another routing: (router, output, index (tokens, k), weights (tokens, k)) -> output
Writer = Callable[[nn.Module, object, torch.Tensor, torch.Tensor], object]


@dataclass(frozen=True)
class Adapter:
    """How one family deviates from the convention; None fields keep the derived behaviour.

    The convention: the router returns `(logits, top_k_weights, top_k_index)` and the block hands
    the last two to `experts(hidden_states, top_k_index, top_k_weights)` unchanged. `reference`
    and `write` serve the verifier (`routelens.capture.verify`), which reads the router's own
    choice and recomputes the block's output with a recorded routing handed out by the router.
    """

    rule: str | None = None  # one line, formatted with the config's switches
    scoring: Scoring | None = None
    read: Reader | None = None  # read (index, weights) from the router's output instead of the experts' inputs
    experts_see_routing: bool = True  # False: the experts get inputs the router scaled, never (index, weights)
    reference: Reader | None = None  # the router's own choice where its output is not the (logits, w, index) triple
    write: Writer | None = None  # the router's output carrying a given routing (None: the triple's)
    choice_method: str | None = None  # the block's method turning router logits into (weights, index), if any


def _read_llama4(router: nn.Module, owner: nn.Module, output) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama4's router returns `(router_scores (tokens, E), router_logits)`: sigmoid of the top-k
    logits scattered into a (tokens, E) matrix that scales each expert's *input*, so the experts
    never see indices. The router's own `torch.topk(router_logits, top_k, dim=1)` is repeated on
    the very tensor it ran on (deterministic, same op: the same indices, best first)."""
    scores, logits = output
    index = torch.topk(logits, router.top_k, dim=1).indices
    return index, scores.gather(1, index)


def _write_llama4(router: nn.Module, output, index: torch.Tensor, weights: torch.Tensor):
    """Llama4's `(router_scores, router_logits)` whose scores hold `weights` at `index`, zero elsewhere
    (its own scores are sigmoid(-inf) = 0 off the chosen experts)."""
    scores, logits = output
    return scores.new_zeros(scores.shape).scatter(1, index.long(), weights.to(scores.dtype)), logits


def _reference_llama4(router: nn.Module, owner: nn.Module, output) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama4's rule from its logits alone: top-k of the logits, each weight the sigmoid of its logit."""
    logits = output[1]
    top, index = torch.topk(logits.float(), router.top_k, dim=-1)
    return index, top.sigmoid()


def _reference_dbrx(router: nn.Module, owner: nn.Module, logits) -> tuple[torch.Tensor, torch.Tensor]:
    """DBRX's rule from its logits: softmax over E, top-k, each divided by the p-norm of the k
    (p = moe_normalize_expert_weights; none: no division)."""
    top, index = torch.topk(logits.float().softmax(dim=-1), owner.top_k, dim=-1)
    p = owner.moe_normalize_expert_weights
    return index, top if p is None else top / top.norm(p=p, dim=-1, keepdim=True)


def read_router_choice(router: nn.Module, owner: nn.Module, output) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weights) of a router returning `(logits, top_k_weights, top_k_index, ...)`."""
    return output[2], output[1]


_SOFTMAX_RENORM = "fp32 softmax over E -> top-k -> renormalise over the k"
_SOFTMAX_MAYBE_RENORM = "fp32 softmax over E -> top-k -> renormalise only if norm_topk_prob={norm}"

# keyed by router class name, as in `_can_record_outputs`
ADAPTERS: dict[str, Adapter] = {
    "MixtralTopKRouter": Adapter(_SOFTMAX_RENORM),
    "Qwen2MoeTopKRouter": Adapter(_SOFTMAX_MAYBE_RENORM + "; plus a sigmoid-gated shared expert"),
    "Qwen3MoeTopKRouter": Adapter(_SOFTMAX_MAYBE_RENORM),
    "OlmoeTopKRouter": Adapter(_SOFTMAX_MAYBE_RENORM),
    "PhimoeTopKRouter": Adapter(
        "sparsemixer top-2: first = argmax of logits, second = argmax of the rest; each "
        "weight = softmax over the logits within 2*router_jitter_noise (relative) of that "
        "choice, taken at it"
    ),
    "DeepseekV2TopkRouter": Adapter(
        "fp32 softmax over E -> top-k ({topk_method}; group_limited_greedy keeps the "
        "topk_group groups of highest max score) -> x routed_scaling_factor={scale}, "
        "no renormalisation; plus shared experts"
    ),
    "DeepseekV3TopkRouter": Adapter(
        "sigmoid scores; selection on scores + e_score_correction_bias, best topk_group "
        "groups by top-2 sum; weights = unbiased scores, renormalised if "
        "norm_topk_prob={norm}, x routed_scaling_factor={scale}; plus shared experts",
        Scoring.SIGMOID,
    ),
    "GptOssTopKRouter": Adapter("top-k of biased logits -> softmax over the k"),
    "GraniteMoeTopKRouter": Adapter("top-k of logits -> softmax over the k"),
    "DbrxRouter": Adapter(
        "softmax over E -> top-k -> divide by the p-norm of the k (p=moe_normalize_expert_weights={p})",
        reference=_reference_dbrx,
        choice_method="route_tokens_to_experts",
    ),
    "JambaTopKRouter": Adapter("fp32 softmax over E -> top-k, no renormalisation"),
    "Llama4Router": Adapter(
        "top-k of logits -> sigmoid of the k logits, scaling the expert's input; plus a shared expert",
        Scoring.SIGMOID,
        _read_llama4,
        experts_see_routing=False,
        reference=_reference_llama4,
        write=_write_llama4,
    ),
    # LongCat-Flash: from transformers 5.25 its block hands zero-computation choices to the experts as
    # real ids with weight 0 and adds their identity itself, so the router's output is the choice
    "LongcatFlashTopkRouter": Adapter(read=read_router_choice),
    "Gemma4TextRouter": Adapter(scoring=Scoring.PROBS),  # these routers output the softmax itself
    "DiffusionGemmaTextRouter": Adapter(scoring=Scoring.PROBS),
}


@dataclass(frozen=True)
class RouterSite:
    """One MoE block of a model: its router, its experts and how routelens reads them."""

    layer: int  # true decoder-layer index
    name: str  # qualified name of the experts module, e.g. "model.layers.3.mlp.experts"
    router: nn.Module
    owner: nn.Module  # the module holding `experts` (and, mostly, the router)
    experts: nn.Module
    adapter: Adapter
    logits_index: int  # where the router's output holds its logits (`OutputRecorder.index`)
    top_k: int
    num_experts: int
    num_zero_experts: int
    hash_routed: bool  # the router selects by token id
    best_first: bool  # False where the router's top-k is unsorted: take() sorts by weight

    @property
    def reads_router(self) -> bool:
        """The recorder reads this site's routing at its router, not at its experts' inputs."""
        return self.adapter.read is not None

    @property
    def experts_see_routing(self) -> bool:
        """The experts are called with (hidden, index, weights) (not with inputs the router scaled)."""
        return self.adapter.experts_see_routing


def _architecture(model: nn.Module) -> str:
    archs = getattr(getattr(model, "config", None), "architectures", None)
    return archs[0] if archs else type(model).__name__


def text_config(model_or_config):
    """The text decoder's config of a model or of a config (a multimodal model's `text_config`; the
    config itself where the model is text only)."""
    config = getattr(model_or_config, "config", model_or_config)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _recorded_routers(model: nn.Module) -> dict[type, int]:
    """Router classes the model's own classes record `router_logits` from, with the output index."""
    found: dict[type, int] = {}
    for module in model.modules():
        entry = (getattr(type(module), "_can_record_outputs", None) or {}).get("router_logits")
        for item in entry if isinstance(entry, (list, tuple)) else [entry]:
            cls = getattr(item, "target_class", item)
            if isinstance(cls, type):
                found.setdefault(cls, int(getattr(item, "index", 0) or 0))
    return found


def _takes_routing(experts: nn.Module) -> bool:
    """True where the experts' forward takes (hidden_states, top_k_index, top_k_weights)."""
    params = [p for p in inspect.signature(type(experts).forward).parameters.values() if p.name != "self"]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def _first_int(*candidates) -> int | None:
    for obj, names in candidates:
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _router_of(owner: nn.Module, recorded: dict[type, int]) -> nn.Module | None:
    """The router beside an experts module: a recorded router class (or the owner itself, where
    the whole block is what transformers records), else a child named like a router."""
    if isinstance(owner, tuple(recorded)):
        return owner
    children = list(owner.named_children())
    for _, child in children:
        if isinstance(child, tuple(recorded)):
            return child
    for name, child in children:
        if name in ("gate", "router") or _ROUTER_NAME.search(type(child).__name__):
            return child
    return None


def site_of(
    owner: nn.Module,
    experts: nn.Module,
    router: nn.Module,
    *,
    name: str = "experts",
    layer: int = 0,
    text=None,
    logits_index: int = 0,
) -> RouterSite | None:
    """The site of one MoE block (`owner` holding `experts` beside `router`), with k and E read from
    the modules (and the text config, where given); None where they cannot be read."""
    top_k = _first_int(
        (router, ["top_k"]),
        (owner, ["top_k", "num_experts_per_tok"]),
        (experts, ["top_k"]),
        (text, ["num_experts_per_tok", "top_k_experts", "moe_topk"]),
    )
    num_experts = _first_int(
        (experts, ["num_routed_experts", "num_experts"]),
        (router, ["num_experts"]),
        (owner, ["num_experts"]),
        (text, ["num_local_experts", "num_experts"]),
    )
    if not top_k or not num_experts:
        return None
    zero = _first_int((experts, ["zero_expert_num"]), (text, ["zero_expert_num"])) or 0
    forward = inspect.signature(type(router).forward).parameters
    return RouterSite(
        layer=layer,
        name=name,
        router=router,
        owner=owner,
        experts=experts,
        adapter=ADAPTERS.get(type(router).__name__, Adapter()),
        logits_index=logits_index,
        top_k=top_k,
        num_experts=num_experts,
        num_zero_experts=zero,
        hash_routed="input_ids" in forward,
        best_first="sorted=False" not in class_source(type(router)) + class_source(type(owner)),
    )


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every MoE block of `model` routelens can record, ordered by decoder layer."""
    recorded = _recorded_routers(model)
    modules = dict(model.named_modules())
    text = text_config(model)
    sites = []
    for name, experts in modules.items():
        if not recorded or name.rsplit(".", 1)[-1] != "experts" or not list(experts.parameters()):
            continue
        if _OTHER_MODALITY.search(name):
            continue
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else model
        router = _router_of(owner, recorded)
        if router is None:
            continue
        adapter = ADAPTERS.get(type(router).__name__, Adapter())
        if adapter.read is None and not _takes_routing(experts):
            continue
        layer = _LAYER_RE.search(name)
        assert layer is not None, f"experts {name} sit outside a decoder layer"
        site = site_of(
            owner,
            experts,
            router,
            name=name,
            layer=int(layer.group(1)),
            text=text,
            logits_index=recorded.get(type(router), 0),
        )
        assert site is not None, f"no top_k / num_experts on {name}"
        sites.append(site)
    if not sites:
        from routelens.models.unsupported import why_unsupported

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        reason = why_unsupported(model_type) if model_type else None
        detail = f" ({reason})" if reason else ""
        raise UnsupportedModelError(
            f"{_architecture(model)} has no MoE layer routelens can record{detail}; supported: "
            f"{', '.join(supported_families())}. Pass a Mixture-of-Experts model of one of these families "
            "(`routelens families` lists them)."
        )
    sites.sort(key=lambda s: s.layer)
    assert len({s.layer for s in sites}) == len(sites), [s.name for s in sites]
    return sites


def supported_families() -> tuple[str, ...]:
    """Model types of the installed transformers that routelens records (every MoE family not listed
    in `routelens.models.unsupported`)."""
    from routelens.models.catalog import moe_families
    from routelens.models.unsupported import UNSUPPORTED

    return tuple(f.model_type for f in moe_families() if f.model_type not in UNSUPPORTED)


def _expert_params(experts: nn.Module, num_experts: int, num_zero: int) -> int:
    """Parameters of one routed expert. Fused weights carry the experts on their first axis: (E, ...)
    or (E + Z, ...) where zero experts have rows, or E blocks stacked (DBRX (E * ffn, H)); shared
    experts live outside `experts` and are not counted, nor is a tensor inside it that all experts
    share (Muse Spark's norm over their width: stored once, whatever E)."""
    total = 0
    for p in experts.parameters():
        rows = p.shape[0] if p.dim() else 1
        if rows in (num_experts, num_experts + num_zero):
            total += p.numel() // rows
        elif p.dim() >= 2 and rows % num_experts == 0:  # E blocks stacked on the first axis
            total += p.numel() // num_experts
    return total


def describe_model(model: nn.Module) -> MoESpec:
    """The routing routelens will record from `model`: family, rule, MoE layers, E, k, expert size.

    Raises `UnsupportedModelError` naming the architecture when the model has no MoE block it can read.
    """
    sites = find_routers(model)
    first = sites[0]
    num_experts = max(s.num_experts for s in sites)
    num_zero = max(s.num_zero_experts for s in sites)
    text = text_config(model)
    family = family_name(type(first.router)) or str(getattr(text, "model_type", type(model).__name__))
    template = first.adapter.rule or derived_rule(type(first.router), type(first.owner), text)
    rule = template.format(
        norm=getattr(text, "norm_topk_prob", None),
        scale=getattr(text, "routed_scaling_factor", None),
        topk_method=getattr(text, "topk_method", None),
        p=getattr(getattr(text, "ffn_config", None), "moe_normalize_expert_weights", None),
    )
    ks = [s.top_k for s in sites]
    hashed = [s.layer for s in sites if s.hash_routed]
    if hashed and "hash" not in rule:
        rule += f"; layers {hashed} route by token id (a fixed token -> experts table)"
    return MoESpec(
        family=family,
        rule=rule,
        moe_layers=[s.layer for s in sites],
        num_experts=num_experts,
        top_k=max(ks),
        expert_params=_expert_params(first.experts, first.num_experts, first.num_zero_experts),
        top_k_per_layer=ks,
        num_zero_experts=num_zero,
        hash_routed_layers=hashed,
    )
