"""Expert capacity: the one capacity rule of routelens, and a drop-in forward for Mixtral MoE
blocks that caps how many tokens each expert takes.

The rule (`expert_capacity`) is shared by training (`routelens train --capacity-factor`),
evaluation (`routelens eval --capacity-factor`) and the expert-parallel simulator (`routelens
simulate balance --cf`), so a capacity factor means the same number of slots everywhere; this
module imports torch only inside the functions that need it, so the simulator can use the rule
without it. Switch Transformer (Fedus et al.) gives each expert `tokens_in_batch / E x CF` slots
with top-1 routing. With top-k each token makes k assignments, and we count all of them, as
ST-MoE (Zoph et al. 2022) does for its top-2 router: `capacity = ceil(tokens_in_batch x k / E x
CF)`, so that CF = 1.0 is exactly enough slots for perfectly balanced routing whatever k is (a
formula that leaves k out needs k times our CF for the same slots). Rounded up, so that CF = 1.0 never starves balanced routing by rounding.
`tokens_in_batch` is every token of one MoE forward call (batch x sequence; routelens packs text,
so there is no padding to count); in the simulator, the tokens of one batch. The capacity belongs
to the logical expert: an expert replicated over devices shares it among its replicas.

Priority (who gets a slot when an expert is over capacity): all first choices before any second
choice, then all second choices before any third, and within one choice rank by token order
(batch row, then position) -- the order GShard / ST-MoE fill expert buffers. An assignment over
capacity is dropped: its weight becomes 0 and the other choices keep their weights (no
renormalisation), so a token whose every choice is dropped gets a zero MoE output and passes
through the residual connection only.

Which ids take slots: only the E routed experts (ids 0..E-1). An id >= E -- a zero-computation
expert (LongCat's identity experts) or the empty-slot / masked-token id some experts implementations
use -- is never dropped, takes no slot and is not counted as an assignment; E and k in the formula
are the block's routed experts and the width of its top-k index. A token counts as fully dropped
when every one of its k assignments is dropped (so a token with such an id never is). Routers that
take their top-k unsorted (DeepSeek-V3's `sorted=False`) are ranked by weight, largest first, as
the recorder orders them, so "first choice" means the same for every family.

`apply_capacity(model, capacity_factor, top_k)` works on every MoE family routelens records (the
sites of `routelens.models.families.find_routers`): in transformers 5 each MoE block calls
`experts(hidden_states, top_k_index, top_k_weights)`, so a forward pre-hook on each experts module
counts the assignments, applies the capacity by zeroing the dropped weights, and passes the rest on
unchanged; the block's own forward, router and shared experts run as they are, so a model under an
unlimited capacity computes exactly what it computes without one. The top-k override sets the k
attributes of each block's router and owner (`routelens.models.attributes.set_top_k`) and the first
call of each hook checks that the experts really got k columns. Everything is restored in `finally`;
it yields a `CapacityStats` counting dropped assignments per MoE layer. Families whose experts never
see (index, weights) -- Llama 4, whose router scales the experts' inputs, and hash-routed layers,
whose table fixes the experts per token id -- are refused a capacity factor or a top-k in one line
(`why_no_capacity`); plain evaluation still works for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from routelens.errors import RoutelensError, UnsupportedModelError
from routelens.models.capacity import capacity_keep_mask, expert_capacity

if TYPE_CHECKING:  # torch is imported where it is used: the rule above stays torch-free
    import torch

    from routelens.models.families import RouterSite


@dataclass
class CapacityStats:
    """Counts accumulated over every forward call made inside `apply_capacity`, per patched layer."""

    layers: list[int]  # decoder-layer index of each patched block
    assignments: np.ndarray = field(init=False)  # (layers,) token-expert assignments routed
    dropped: np.ndarray = field(init=False)  # (layers,) assignments over capacity
    tokens: np.ndarray = field(init=False)  # (layers,) tokens seen
    tokens_fully_dropped: np.ndarray = field(init=False)  # (layers,) tokens that lost all k experts

    def __post_init__(self) -> None:
        n = len(self.layers)
        self.assignments, self.dropped = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.tokens, self.tokens_fully_dropped = np.zeros(n, np.int64), np.zeros(n, np.int64)

    def dropped_share(self) -> np.ndarray:
        """(layers,) share of assignments dropped (0 where nothing was routed)."""
        return self.dropped / np.maximum(self.assignments, 1)

    def fully_dropped_share(self) -> np.ndarray:
        """(layers,) share of tokens that passed through the residual only."""
        return self.tokens_fully_dropped / np.maximum(self.tokens, 1)

    def reset(self) -> None:
        self.__post_init__()


def moe_blocks(model: torch.nn.Module) -> list[tuple[int, RouterSite]]:
    """(decoder layer index, `RouterSite`) for every MoE block of `model`, in layer order: the sites
    routelens records, of any family; a lone MoE block (no model around it) is layer 0."""
    from routelens.models.families import find_routers

    try:
        sites = find_routers(model)
    except UnsupportedModelError:
        site = _lone_block_site(model)
        if site is not None:
            return [(site.layer, site)]
        if getattr(model, "config", None) is not None:  # a model: its own message says why its family is not recorded
            raise
        raise RoutelensError(
            f"{type(model).__name__} has no MoE block routelens can record; capacity factor and top-k override need "
            "a Mixture-of-Experts model of a family `routelens families` lists (or one MoE block, e.g. a MixtralSparseMoeBlock)."
        ) from None
    return [(site.layer, site) for site in sites]


def _lone_block_site(block: torch.nn.Module) -> RouterSite | None:
    """The site of a MoE block used on its own (tests, a block being trained): find_routers needs the
    model around it (its recorded router classes and decoder-layer names), so read the block directly."""
    from torch import nn

    from routelens.models import families as fam

    experts = getattr(block, "experts", None)
    if not isinstance(experts, nn.Module) or not list(experts.parameters()) or not fam._takes_routing(experts):
        return None
    router = fam._router_of(block, {})
    return None if router is None else fam.site_of(block, experts, router)


def why_no_capacity(site: RouterSite) -> str | None:
    """Why `site`'s experts cannot take a capacity or another top-k (None: they can): the hooks need
    experts called with (hidden, index, weights), and a k the router chooses."""
    if not site.experts_see_routing:
        return f"{site.name} is fed inputs its router scaled, never expert indices and weights"
    if site.hash_routed:
        return f"{site.name} is routed by token id (a fixed token -> experts table)"
    return None


def _refuse(sites: list[RouterSite], what: str, fix: str) -> None:
    for site in sites:
        reason = why_no_capacity(site)
        if reason is not None:
            raise RoutelensError(f"{what} cannot be applied to this {_family(site)} model: {reason}; {fix}.")


def _family(site: RouterSite) -> str:
    from routelens.models.catalog import family_name

    return family_name(type(site.router)) or type(site.owner).__name__


def _rank_order(weights: torch.Tensor, best_first: bool) -> torch.Tensor | None:
    """Column order that puts each token's choices best first (None: they already are)."""
    if best_first:
        return None
    return weights.detach().float().sort(dim=-1, descending=True, stable=True).indices


def _capacity_hook(
    site: RouterSite, slot: int, *, capacity_factor: float | None, top_k: int | None, stats: CapacityStats
):
    """The override of `site.experts`' inputs: counts, checks the overridden k once, zeroes the
    weights of assignments over capacity."""
    import torch

    num_experts, checked = site.num_experts, [top_k is None]

    def override(index, weights):
        k = index.shape[-1]
        if not checked[0]:
            if k != top_k:
                raise RoutelensError(
                    f"this {_family(site)} model's k cannot be overridden: {site.name} still chose {k} "
                    f"experts per token with top-k set to {top_k}; evaluate without --top-k."
                )
            checked[0] = True
        flat = index.reshape(-1, k)  # (tokens, k)
        real = flat < num_experts  # ids >= E (zero-computation, empty slot) take no slot
        stats.assignments[slot] += int(real.sum())
        stats.tokens[slot] += flat.shape[0]
        if capacity_factor is None:
            return None
        order = _rank_order(weights.reshape(-1, k), site.best_first)
        ranked = flat if order is None else flat.gather(-1, order)
        keep = capacity_keep_mask(ranked, num_experts, expert_capacity(flat.shape[0], num_experts, k, capacity_factor))
        if order is not None:
            keep = torch.empty_like(keep).scatter_(-1, order, keep)  # back to the router's column order
        with torch.no_grad():
            stats.dropped[slot] += int((~keep).sum())
            stats.tokens_fully_dropped[slot] += int((~keep).all(dim=-1).sum())
        return index, weights * keep.view(weights.shape).to(weights.dtype)  # dropped: weight 0, others unchanged

    return override


@contextmanager
def apply_capacity(
    model: torch.nn.Module, capacity_factor: float | None = None, top_k: int | None = None
) -> Iterator[CapacityStats]:
    """Cap the model's MoE blocks at expert capacity `capacity_factor` (None: unlimited) with
    `top_k` experts per token (None: the model's own). Restores the model on exit, even on error.

        with apply_capacity(model, capacity_factor=1.0, top_k=1) as stats:
            model(input_ids)
        stats.dropped_share()   # (layers,)
    """
    from routelens.models.attributes import set_top_k
    from routelens.models.hooks import Hooks

    sites = [site for _, site in moe_blocks(model)]
    num_experts = max(site.num_experts for site in sites)
    if capacity_factor is not None and capacity_factor <= 0:
        raise RoutelensError(f"capacity factor {capacity_factor} is not positive; use e.g. --capacity-factor 1.25.")
    if top_k is not None and not 1 <= top_k <= num_experts:
        raise RoutelensError(f"top-k {top_k} is outside 1..{num_experts} (the model's experts); pick e.g. --top-k 2.")
    if capacity_factor is not None:
        _refuse(sites, f"capacity factor {capacity_factor:g}", "evaluate without --capacity-factor")
    if top_k is not None:
        _refuse(sites, f"top-k {top_k}", "evaluate without --top-k")
    stats = CapacityStats([site.layer for site in sites])
    hooks, changed = Hooks(), []
    try:
        for slot, site in enumerate(sites):
            if top_k is not None:
                modules = dict.fromkeys([site.router, site.owner, site.experts, *site.router.modules()])
                changed += set_top_k(modules, site.top_k, top_k)
            if why_no_capacity(site) is None:  # plain evaluation of the others: nothing to count at their experts
                hooks.override_experts_input(
                    site, _capacity_hook(site, slot, capacity_factor=capacity_factor, top_k=top_k, stats=stats)
                )
        yield stats
    finally:
        hooks.remove()
        for module, name, old in reversed(changed):  # nested overrides unwind in order
            setattr(module, name, old)
