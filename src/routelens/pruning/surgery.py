"""Removing routed experts from a loaded MoE model, in place, the same way for every family.

For each MoE block (found by `routelens.models.families.find_routers`, the sites routelens
records), the kept experts' slices of every per-expert tensor are kept, in expert order, bit-equal:

- the experts module's fused (E, ...) parameters and buffers (`gate_up_proj`, `down_proj`, their
  biases), or its E child modules where the experts are a module list;
- the router's per-expert rows: its weight (E, H), bias, and selection biases such as DeepSeek-V3's
  `e_score_correction_bias`; where the router scores choices after the E experts (LongCat's
  zero-computation experts, Zaya's null choice, Inkling's shared-expert gate: `extra_choices`),
  those rows are kept too, after the kept experts, so their ids become N, N+1, ...;
- tensors of the experts module without an expert axis that every expert shares (a norm over
  their width) stay whole;
- the counts the modules keep as attributes (`num_experts`, `total_experts`, `top_k`, a Linear's
  `out_features`; E + extra choices becomes N + extra),
  and the config's (`num_local_experts` / `num_experts` / `n_routed_experts` ..., found by value),
  with top-k = min(k, N).

Expert ids are renumbered by rank: kept [0, 2, 5] become 0, 1, 2. The router then chooses among the
kept experts by the family's own rule, which for a softmax router equals masking the removed
experts' logits to -inf. Group-limited routers (DeepSeek `n_group`) keep their groups, so every group
must keep the same number of experts. Families this cannot be done for say why (`why_not_prunable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from routelens.errors import RoutelensError
from routelens.models.attributes import COUNT_NAMES, GROUP_NAMES, TOPK_NAMES, set_top_k


def _tensors(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> list[tuple[nn.Module, str, torch.Tensor, bool]]:
    """(owning module, attribute, tensor, is_parameter) of every parameter and buffer under
    `module`, leaving out the subtrees `skip`."""
    out, skipped = [], set()
    for sub in skip:
        skipped |= {id(m) for m in sub.modules()}
    for sub in module.modules():
        if id(sub) in skipped:
            continue
        out += [(sub, name, p, True) for name, p in sub._parameters.items() if p is not None]
        out += [(sub, name, b, False) for name, b in sub._buffers.items() if b is not None]
    return out


def _router_tensors(site) -> list:
    """The router's tensors and the block's own (selection biases some blocks keep, such as
    `expert_bias`), never the experts' or shared experts'."""
    own = [t for t in _tensors(site.owner, (site.experts,)) if t[0] is site.owner]
    if site.router is site.owner:
        return own
    return _tensors(site.router) + own


def extra_choices(site) -> int:
    """Choices the router scores after its E routed experts, in its last rows: zero-computation
    experts (LongCat), a null "skip" choice (Zaya), a shared expert's gate (Inkling). Pruning keeps
    them, after the kept experts."""
    if site.num_zero_experts:
        return site.num_zero_experts
    E = site.num_experts
    for _, _, t, _ in _router_tensors(site):
        if t.dim() == 2 and t.shape[0] in (E + 1, E + 2) and t.shape[1] != E:
            return t.shape[0] - E
    return 0


def _expert_axis(tensor: torch.Tensor, num_experts: int, extra: int = 0) -> int | None:
    """The axis a router tensor holds its experts on (E entries, or E + extra where the extra
    choices have rows too): the first if it has, else the only one that has (DeepSeek-style (1, E)
    biases); None for a tensor that is not per expert."""
    sizes = {num_experts, num_experts + extra}
    shape = tuple(tensor.shape)
    if not shape:
        return None
    if shape[0] in sizes:
        return 0
    axes = [i for i, size in enumerate(shape) if size in sizes]
    return axes[0] if len(axes) == 1 else None


def _shared_by_all(tensor: torch.Tensor, per_expert: list[torch.Tensor]) -> bool:
    """A tensor of the experts module without an expert axis whose every size is one of the
    per-expert tensors' other sizes (a norm or scale over their hidden width, Muse Spark's): the same
    for every expert, so it stays whole. Stacked experts (DBRX's (E x ffn, H)) have no such partner."""
    widths = {size for t in per_expert for size in t.shape[1:]}
    return bool(per_expert) and all(size in widths for size in tensor.shape)


def _int_attr(obj, names) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def num_groups(site, text_config) -> int:
    """Expert groups of a group-limited router (DeepSeek `n_group`), 1 where there are none."""
    return (
        _int_attr(site.router, GROUP_NAMES)
        or _int_attr(site.owner, GROUP_NAMES)
        or _int_attr(text_config, GROUP_NAMES)
        or 1
    )


def why_not_prunable(site) -> str | None:
    """Why the experts of this MoE block cannot be removed by slicing, or None when they can."""
    E, extra = site.num_experts, extra_choices(site)
    if site.hash_routed:
        return "hash-routed layers map token ids to expert ids through a fixed table"
    if isinstance(site.experts, nn.ModuleList):
        if len(site.experts) != E:
            return f"its experts are a list of {len(site.experts)} modules, not E = {E}"
    else:
        tensors = _tensors(site.experts)
        per_expert = [t for _, _, t, _ in tensors if t.dim() and t.shape[0] in (E, E + extra)]
        for _, name, t, _ in tensors:
            if (t.dim() == 0 or t.shape[0] not in (E, E + extra)) and not _shared_by_all(t, per_expert):
                return f"experts keep {name} as {tuple(t.shape)}, not (E = {E}, ...) per expert"
    if not any(_expert_axis(t, E, extra) is not None for _, _, t, _ in _router_tensors(site)):
        return f"no router tensor has one row per expert (E = {E})"
    return None


def check_kept(kept: Sequence[int], num_experts: int, groups: int, top_k: int, layer: int) -> list[int]:
    """The sorted kept ids, refused in one line when they are not valid for this block."""
    ids = sorted(set(int(e) for e in kept))
    if not ids:
        raise RoutelensError(f"layer {layer} would keep no expert; keep at least 1 of its {num_experts}.")
    bad = [e for e in ids if not 0 <= e < num_experts]
    if bad:
        raise RoutelensError(
            f"expert {bad[0]} of layer {layer} is outside 0..{num_experts - 1}; pass ids of its experts."
        )
    if groups > 1:
        size = num_experts // groups
        per_group = [sum(1 for e in ids if e // size == g) for g in range(groups)]
        if len(set(per_group)) != 1:
            raise RoutelensError(
                f"layer {layer} routes within {groups} groups of {size} experts, and would keep {per_group} per group; "
                f"keep as many in every group (N a multiple of {groups})."
            )
    return ids


def _slice(
    owner: nn.Module, name: str, tensor: torch.Tensor, is_param: bool, index: torch.Tensor, axis: int = 0
) -> None:
    kept = tensor.detach().index_select(axis, index.to(tensor.device)).clone()
    if is_param:
        setattr(owner, name, nn.Parameter(kept, requires_grad=tensor.requires_grad))
    else:
        owner._buffers[name] = kept


def _is_count_name(name: str) -> bool:
    """Attribute names that count experts (`total_experts`, Zaya's `num_router_classes`), not widths or k."""
    if name in COUNT_NAMES:
        return True
    return ("expert" in name or name.endswith("classes")) and not any(
        w in name for w in ("size", "dim", "hidden", "per_tok", "top")
    )


def _set_counts(modules, num_experts: int, n: int, top_k: int, extra: int = 0) -> None:
    """E -> N (and E + extra -> N + extra, where the router scores extra choices) in every count
    attribute of `modules`, top-k -> min(k, N)."""
    after = {num_experts: n} | ({num_experts + extra: n + extra} if extra else {})
    for module in modules:
        for name, value in list(vars(module).items()):
            if type(value) is int and value in after and _is_count_name(name):
                setattr(module, name, after[value])
        set_top_k([module], top_k, min(top_k, n))
        if isinstance(module, nn.Linear) and module.out_features in after:
            module.out_features = after[module.out_features]


def remove_experts_from_block(site, kept: Sequence[int], groups: int = 1) -> list[int]:
    """Keep only experts `kept` (ids of this block) in `site`'s MoE block; returns the sorted ids."""
    reason = why_not_prunable(site)
    if reason is not None:
        raise RoutelensError(f"cannot remove experts of {site.name}: {reason}.")
    E, k = site.num_experts, site.top_k
    ids = check_kept(kept, E, groups, k, site.layer)
    n = len(ids)
    if groups > 1:
        topk_group = _int_attr(site.router, ("topk_group",)) or _int_attr(site.owner, ("topk_group",)) or groups
        if topk_group * (n // groups) < min(k, n):
            raise RoutelensError(
                f"layer {site.layer} picks {min(k, n)} experts within its best {topk_group} of {groups} groups, which "
                f"would hold only {topk_group * (n // groups)}; keep more experts (N >= {groups * -(-min(k, n) // topk_group)})."
            )
    extra = extra_choices(site)
    index = torch.tensor(ids, dtype=torch.long)
    with_extra = torch.tensor(ids + list(range(E, E + extra)), dtype=torch.long)  # the extra choices stay last
    rows = [(*t, _expert_axis(t[2], E, extra)) for t in _router_tensors(site)]
    rows = [r for r in rows if r[4] is not None]
    if isinstance(site.experts, nn.ModuleList):
        kept_modules = [site.experts[i] for i in ids]
        for i in range(len(site.experts) - 1, -1, -1):
            del site.experts[i]
        site.experts.extend(kept_modules)
    else:
        rows += [(*t, 0) for t in _tensors(site.experts) if t[2].dim() and t[2].shape[0] in (E, E + extra)]
    with torch.no_grad():
        for owner, name, tensor, is_param, axis in rows:
            _slice(owner, name, tensor, is_param, index if tensor.shape[axis] == E else with_extra, axis)
    modules = [site.router, site.experts, site.owner, *site.router.modules()]
    if not isinstance(site.experts, nn.ModuleList):
        modules += list(site.experts.modules())
    _set_counts(dict.fromkeys(modules), E, n, k, extra)
    return ids


def untraced_expert_sets(model: nn.Module, sites) -> list[str]:
    """Experts modules the sites do not cover (ERNIE-4.5-VL's vision experts, which no text token
    reaches): the config's one expert count sizes them too, so a checkpoint pruned in the text
    experts alone would not load."""
    traced = {id(s.experts) for s in sites}
    return [
        name
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] == "experts" and id(module) not in traced and list(module.parameters())
    ]


def update_config(config, num_experts: int, n: int, top_k: int) -> dict[str, tuple]:
    """Set the (text) config's expert count and top-k for N experts per layer; returns
    {field: (before, after)} of what changed."""
    from routelens.models.families import text_config

    text = text_config(config)
    aliases = getattr(text, "attribute_map", {}) or {}  # e.g. OLMoE's num_local_experts -> num_experts
    changed = {}
    for name in (n for n in COUNT_NAMES if n not in aliases):
        if getattr(text, name, None) == num_experts:
            changed[name] = (num_experts, n)
            setattr(text, name, n)
    for name in (n for n in TOPK_NAMES if n not in aliases):
        value = getattr(text, name, None)
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            after = [min(v, n) for v in value]
            if after != value:
                changed[name] = (value, after)
                setattr(text, name, after)
        elif isinstance(value, int) and not isinstance(value, bool) and value > n:
            changed[name] = (value, n)
            setattr(text, name, n)
    if not any(name in changed for name in COUNT_NAMES) and n != num_experts:
        raise RoutelensError(
            f"{type(text).__name__} names its expert count by no field routelens knows ({', '.join(COUNT_NAMES)}); "
            "this family cannot be saved pruned."
        )
    return changed


def remove_experts(model: nn.Module, keep: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    """Keep, in every MoE layer listed in `keep` (decoder layer -> expert ids), only those experts;
    layers not listed keep all. Returns {layer: kept ids}. The config is left alone (per-layer
    counts may differ); `update_config` sets it where every layer keeps N."""
    from routelens.models.families import find_routers, text_config

    sites = {s.layer: s for s in find_routers(model)}
    unknown = sorted(set(keep) - set(sites))
    if unknown:
        raise RoutelensError(
            f"layer {unknown[0]} is not a MoE layer of this model; its MoE layers are {', '.join(map(str, sites))}."
        )
    text = text_config(model)
    return {
        layer: remove_experts_from_block(sites[layer], ids, num_groups(sites[layer], text))
        for layer, ids in keep.items()
    }
