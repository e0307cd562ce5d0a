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

`apply_capacity(model, capacity_factor, top_k)` patches every `MixtralSparseMoeBlock` (and the
router's top-k) for the duration of a `with` block and restores them in `finally`; it yields a
`CapacityStats` that counts dropped assignments per layer. The router module is still called, so
hooks that record `(router_logits, top_k_weights, top_k_index)` keep working.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from routelens.errors import RoutelensError

if TYPE_CHECKING:  # torch is imported where it is used: the rule above stays torch-free
    import torch


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert for one MoE call: ceil(num_tokens x top_k / num_experts x capacity_factor)."""
    if capacity_factor <= 0:
        raise RoutelensError(f"capacity factor {capacity_factor} is not positive; use e.g. --capacity-factor 1.25.")
    return math.ceil(num_tokens * top_k / num_experts * capacity_factor - 1e-9)


def capacity_keep_mask(top_k_index: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which assignments fit: (tokens, k) bool, True where the token keeps that expert.

    Slots are filled choice rank by choice rank, and in token order within a rank.
    """
    import torch
    import torch.nn.functional as F

    tokens, k = top_k_index.shape
    rank_major = top_k_index.t().reshape(-1)  # (k * tokens,): all first choices, then all second...
    onehot = F.one_hot(rank_major.long(), num_experts)  # (k * tokens, E)
    slot = (torch.cumsum(onehot, dim=0) * onehot).sum(-1)  # (k * tokens,) 1-based place in its expert's queue
    return (slot <= capacity).view(k, tokens).t()  # (tokens, k)


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


def moe_blocks(model: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
    """(decoder layer index, block) for every Mixtral sparse MoE block of `model`, in layer order."""
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    found = []
    for name, module in model.named_modules():
        if isinstance(module, MixtralSparseMoeBlock):
            parts = name.split(".")
            layer = next((int(p) for p in reversed(parts) if p.isdigit()), len(found))
            found.append((layer, module))
    if not found:
        raise RoutelensError(
            f"{type(model).__name__} has no MixtralSparseMoeBlock; capacity factor and top-k override "
            "need a Mixtral-architecture model (e.g. one made by `routelens train`)."
        )
    return found


def _capacity_forward(block, hidden_states: torch.Tensor, *, capacity_factor: float | None, stats: CapacityStats, slot: int):
    """MixtralSparseMoeBlock.forward with an expert capacity; identical when nothing is dropped."""
    import torch

    batch_size, sequence_length, hidden_dim = hidden_states.shape
    if block.training and block.jitter_noise > 0:
        hidden_states *= torch.empty_like(hidden_states).uniform_(1.0 - block.jitter_noise, 1.0 + block.jitter_noise)
    flat = hidden_states.view(-1, hidden_dim)  # (tokens, H)
    _, top_k_weights, top_k_index = block.gate(flat)  # (tokens, k), (tokens, k)
    tokens, k = top_k_index.shape
    if capacity_factor is not None:
        num_experts = block.gate.num_experts
        keep = capacity_keep_mask(top_k_index, num_experts, expert_capacity(tokens, num_experts, k, capacity_factor))
        top_k_weights = top_k_weights * keep.to(top_k_weights.dtype)  # dropped: weight 0, others unchanged
        with torch.no_grad():
            dropped = (~keep).sum().item()
            stats.dropped[slot] += dropped
            stats.tokens_fully_dropped[slot] += (~keep).all(dim=-1).sum().item()
    stats.assignments[slot] += tokens * k
    stats.tokens[slot] += tokens
    out = block.experts(flat, top_k_index, top_k_weights)  # (tokens, H)
    return out.reshape(batch_size, sequence_length, hidden_dim)


@contextmanager
def apply_capacity(model: torch.nn.Module, capacity_factor: float | None = None, top_k: int | None = None) -> Iterator[CapacityStats]:
    """Patch the model's MoE blocks: expert capacity `capacity_factor` (None: unlimited) and
    `top_k` experts per token (None: the model's own). Restores the model on exit, even on error.

        with apply_capacity(model, capacity_factor=1.0, top_k=1) as stats:
            model(input_ids)
        stats.dropped_share()   # (layers,)
    """
    blocks = moe_blocks(model)
    num_experts = blocks[0][1].gate.num_experts
    if capacity_factor is not None and capacity_factor <= 0:
        raise RoutelensError(f"capacity factor {capacity_factor} is not positive; use e.g. --capacity-factor 1.25.")
    if top_k is not None and not 1 <= top_k <= num_experts:
        raise RoutelensError(f"top-k {top_k} is outside 1..{num_experts} (the model's experts); pick e.g. --top-k 2.")
    stats = CapacityStats([layer for layer, _ in blocks])
    saved = []
    try:
        for slot, (_, block) in enumerate(blocks):
            saved.append((block, block.gate.top_k, block.top_k, vars(block).get("forward")))
            if top_k is not None:
                block.gate.top_k = block.top_k = top_k
            patched = types.MethodType(
                lambda self, h, _slot=slot: _capacity_forward(self, h, capacity_factor=capacity_factor, stats=stats, slot=_slot),
                block,
            )
            block.forward = patched
        yield stats
    finally:
        for block, gate_k, block_k, own_forward in saved:  # nested patches unwind in order
            block.gate.top_k, block.top_k = gate_k, block_k
            if own_forward is None:
                del block.forward
            else:
                block.forward = own_forward
