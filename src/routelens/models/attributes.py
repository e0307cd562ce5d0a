"""The attribute names transformers gives a MoE's expert count, k and expert groups, in configs and
modules alike, and how k is set on a built model (for `routelens eval --top-k` and pruning)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# Names the configs and modules of transformers give the number of routed experts and k
COUNT_NAMES = ("num_local_experts", "num_experts", "n_routed_experts", "num_routed_experts", "moe_num_experts")
TOPK_NAMES = (
    "num_experts_per_tok",
    "top_k",
    "moe_topk",
    "moe_top_k",
    "num_experts_per_token",
    "top_k_experts",
    "moe_k",
)
GROUP_NAMES = ("n_group", "num_group", "num_expert_group")


def set_top_k(modules, top_k: int, new: int) -> list[tuple[nn.Module, str, int]]:
    """Set every k attribute (`TOPK_NAMES`) of `modules` that holds `top_k` to `new`; returns
    (module, name, old value) of each one set, to undo it (`routelens eval --top-k` does)."""
    changed = []
    for module in modules:
        for name in TOPK_NAMES:
            if getattr(module, name, None) == top_k:
                changed.append((module, name, top_k))
                setattr(module, name, new)
    return changed
