"""A one-line routing rule for a family with no hand-written one, read from its router's source.

The rule goes into the trace manifest and `routelens families`; it names the mechanisms the
router and its MoE block use (scoring, bias-corrected or group-limited selection,
renormalisation, scaling, shared and zero-computation experts, token-id hashing). It is a
summary for people: what is recorded never depends on it (the experts' inputs are).
"""

from __future__ import annotations

import inspect

from torch import nn


def _source(*objects) -> str:
    text = []
    for obj in objects:
        try:
            text.append(inspect.getsource(obj if isinstance(obj, type) else type(obj)))
        except (OSError, TypeError):
            pass
    return "\n".join(text)


def derived_rule(router: nn.Module, owner: nn.Module, config) -> str:
    """`router`'s rule in one line; `{norm}` and `{scale}` are filled in from the config by the caller."""
    src = _source(router, owner) if router is not owner else _source(router)
    scoring_func = getattr(config, "scoring_func", None)
    if scoring_func:
        first = f"{scoring_func} scores"
    elif "sigmoid" in src:
        first = "sigmoid scores"
    else:
        first = "softmax over E"
    parts = [first]
    if "tid2eid" in src or "input_ids" in inspect.signature(type(router).forward).parameters:
        parts.append("hash layers select by token id")
    if "correction_bias" in src or "expert_bias" in src:
        parts.append("selection on scores + a bias correction")
    if "topk_group" in src or "n_group" in src:
        parts.append("group-limited (best topk_group of n_group groups)")
    parts.append("top-k")
    if "norm_topk_prob" in src:
        parts.append("renormalised if norm_topk_prob={norm}")
    elif "keepdim=True)" in src and ".sum(" in src:
        parts.append("renormalised over the k")
    if "routed_scaling_factor" in src:
        parts.append("x routed_scaling_factor={scale}")
    extras = []
    if any("shared" in name for name, _ in owner.named_children()):
        extras.append("plus shared experts")
    if "zero_expert" in _source(*[m for _, m in owner.named_children()]) + src:
        extras.append("plus zero-computation (identity) experts")
    return " -> ".join(parts) + "".join(f"; {e}" for e in extras)
