"""The capacity rule of a MoE block, one definition for training, evaluation and the simulators:
how many assignments an expert accepts per call, and which ones fit. Torch is imported where it is
used, so that the numpy simulators read the rule without it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from routelens.errors import RoutelensError

if TYPE_CHECKING:
    import torch


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert for one MoE call: ceil(num_tokens x top_k / num_experts x capacity_factor)."""
    if capacity_factor <= 0:
        raise RoutelensError(f"capacity factor {capacity_factor} is not positive; use e.g. --capacity-factor 1.25.")
    return math.ceil(num_tokens * top_k / num_experts * capacity_factor - 1e-9)


def capacity_keep_mask(top_k_index: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which assignments fit: (tokens, k) bool, True where the token keeps that expert.

    Slots are filled choice rank by choice rank (column by column), and in token order within a
    rank. Ids >= num_experts (zero-computation experts, empty slots) are always kept and take no slot.
    """
    import torch
    import torch.nn.functional as F

    tokens, k = top_k_index.shape
    rank_major = top_k_index.t().reshape(-1).long()  # (k * tokens,): all first choices, then all second...
    real = rank_major < num_experts
    onehot = F.one_hot(rank_major.clamp(max=num_experts), num_experts + 1)[:, :num_experts]  # (k * tokens, E)
    slot = (torch.cumsum(onehot, dim=0) * onehot).sum(-1)  # (k * tokens,) 1-based place in its expert's queue
    return ((slot <= capacity) | ~real).view(k, tokens).t()  # (tokens, k)
