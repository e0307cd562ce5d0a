"""Routing replay (R3): every MoE layer uses given expert ids, and the family's own code weighs them.

    with routelens.replay(model, experts, attention_mask=mask):   # experts (batch, seq, L, k)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()                                               # the routers get their gradient

The selection is overridden *inside* the family's router, at the one call that picks the experts:
the top-k over the expert axis with k = the layer's top_k. While the router runs (DBRX: its block,
which chooses from the router's logits), a torch function mode hands that call the forced ids and, as values, the gathered entries of the very tensor it was
given (the entries before any masking the router applied on the way, so a group-limited router's
forced id outside its own groups keeps its unmasked score). Everything the family computes after
its top-k is its own code: softmax over the chosen (GPT-OSS, Granite), renormalisation (Mixtral),
Qwen's gather with or without `norm_topk_prob`, DeepSeek-V3's gather of the unbiased sigmoid scores
with `routed_scaling_factor`, LongCat's zero-computation experts, the weights' gradient. A group
top-k (k = topk_group over groups) is a call over another axis and is left alone. Replaying a
model's own choice therefore reproduces its forward bit for bit.

Forced ids are keyed by MoE site (slot), never by call order, so gradient checkpointing's
recomputation of a layer replays the same ids. Rows route freely (the router's own choice) where
`attention_mask` is 0 or the row holds a negative id (a routing that lacks the token, e.g. before
an import's prompt start). Hash-routed layers (DeepSeek-V4's first layers) look their experts up in
a frozen `tid2eid` table; the lookup is what gets replaced there. Where the model computes the
family's auxiliary balance loss (`output_router_logits`), its top-k over all layers' logits takes
the replayed selection too. Families where forcing cannot be exact are refused (`REFUSED`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from routelens.errors import RoutelensError
from routelens.models.families import RouterSite, describe_model, find_routers
from routelens.models.hooks import Hooks

# Families where no override of the selection gives the family's weights at forced ids, and why.
REFUSED: dict[str, str] = {
    "phimoe": "sparsemixer: each weight is a softmax over the logits within a jitter band of the router's own "
    "argmax after masking its earlier choices, and training samples the choice; a forced id has no weight "
    "under the family's rule",
}

_TOPK = (torch.topk, torch.Tensor.topk)
_MASKING = (torch.masked_fill, torch.Tensor.masked_fill)


def why_refused(model_type: str) -> str | None:
    """Why routing replay refuses `model_type`, or None where it replays it."""
    return REFUSED.get(model_type)


@dataclass
class _Slot:
    """The forced routing of one MoE site: ids (tokens, k) and which rows route freely (tokens,)."""

    site: RouterSite
    ids: torch.Tensor
    free: torch.Tensor
    forced_rows: bool = field(init=False)
    calls: int = 0  # selections replaced so far (a checkpointed layer's recomputation counts again)

    def __post_init__(self):
        self.forced_rows = bool((~self.free).any())

    def on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ids.device != device:
            self.ids, self.free = self.ids.to(device), self.free.to(device)
        return self.ids, self.free


def _topk_args(args, kwargs) -> tuple[torch.Tensor, int, int, bool]:
    """(input, k, dim, largest) of a `torch.topk` / `Tensor.topk` call."""
    names = ("input", "k", "dim", "largest")
    bound = dict(zip(names, args)) | {("input" if n == "self" else n): v for n, v in kwargs.items()}
    return bound["input"], int(bound["k"]), int(bound.get("dim", -1)), bool(bound.get("largest", True))


class _Forcing(TorchFunctionMode):
    """Active while one MoE block runs: its expert-selection top-k (or hash lookup) returns the
    forced ids; every other torch call passes through unchanged."""

    def __init__(self, slot: _Slot, tokens: int):
        super().__init__()
        self.slot, self.tokens = slot, tokens
        self.unmasked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(masked) -> (masked, before)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MASKING:
            out = func(*args, **kwargs)
            if torch.is_tensor(out) and out.shape == args[0].shape:
                self.unmasked[id(out)] = (out, args[0])
            return out
        if func in _TOPK:
            x, k, dim, largest = _topk_args(args, kwargs)
            site = self.slot.site
            if largest and k == site.top_k and dim in (-1, x.dim() - 1) and x.shape[-1] >= site.num_experts:
                return self._topk(func(*args, **kwargs), x)
        if func is torch.Tensor.__getitem__ and self.slot.site.hash_routed:
            table = getattr(self.slot.site.router, "tid2eid", None)
            if table is not None and args[0] is table:
                return self._lookup(func(*args, **kwargs))
        return func(*args, **kwargs)

    def _rows(self, shape: torch.Size) -> None:
        rows = int(np.prod(shape[:-1]))
        if rows != self.tokens:
            raise RoutelensError(
                f"replay: MoE layer {self.slot.site.layer} routed {rows} tokens where the given experts cover "
                f"{self.tokens}; run the forward of the same input_ids (batch, seq) the experts were given for, "
                "without a cache."
            )

    def _unmask(self, x: torch.Tensor) -> torch.Tensor:
        while id(x) in self.unmasked and self.unmasked[id(x)][0] is x:
            x = self.unmasked[id(x)][1]
        return x

    def _check_ids(self, ids: torch.Tensor, free: torch.Tensor, width: int) -> None:
        bad = (~free) & (ids >= width).any(-1)
        if bool(bad.any()):
            raise RoutelensError(
                f"replay: MoE layer {self.slot.site.layer} chooses among {width} ids but the given experts hold "
                f"{int(ids[bad].max())}; pass the ids of this model's routing (0 <= id < {width})."
            )

    def _topk(self, own, x: torch.Tensor):
        self._rows(x.shape)
        ids, free = self.slot.on(x.device)
        self._check_ids(ids, free, x.shape[-1])
        lead = x.shape[:-1]
        ids = ids.clamp(min=0).reshape(*lead, -1)
        keep = free.reshape(*lead, 1)
        values = self._unmask(x).gather(-1, ids)
        self.slot.calls += 1
        return torch.return_types.topk((torch.where(keep, own.values, values), torch.where(keep, own.indices, ids)))

    def _lookup(self, own: torch.Tensor) -> torch.Tensor:
        self._rows(own.shape)
        ids, free = self.slot.on(own.device)
        self._check_ids(ids, free, self.slot.site.num_experts)
        self.slot.calls += 1
        return torch.where(free[:, None], own, ids.clamp(min=0).to(own.dtype))


class _Observing(TorchFunctionMode):
    """Active while one MoE block runs, changing nothing: keeps the ids its expert-selection top-k
    chose and the selection margin, the k-th minus the (k+1)-th of the very scores that top-k ran on
    (selection bias and group masking included; inf where the layer has no (k+1)-th id, NaN where a
    hash layer looks its ids up)."""

    def __init__(self, site: RouterSite, seen: list):
        super().__init__()
        self.site, self.seen = site, seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        site = self.site
        if func in _TOPK:
            x, k, dim, largest = _topk_args(args, kwargs)
            if largest and k == site.top_k and dim in (-1, x.dim() - 1) and x.shape[-1] >= site.num_experts:
                with torch.no_grad():
                    flat = x.detach().float().reshape(-1, x.shape[-1])
                    if flat.shape[-1] > k:
                        top = flat.topk(k + 1, dim=-1).values
                        margin = top[:, k - 1] - top[:, k]
                    else:
                        margin = torch.full(flat.shape[:1], float("inf"))
                self.seen.append((out.indices.detach().reshape(-1, k), margin))
        elif func is torch.Tensor.__getitem__ and site.hash_routed and args[0] is getattr(site.router, "tid2eid", None):
            self.seen.append((out.detach().reshape(-1, site.top_k), torch.full(out.shape[:1], float("nan"))))
        return out


@contextmanager
def observing_selection(model: nn.Module) -> Iterator[list[list]]:
    """While inside, each MoE layer's own selection is kept, changing nothing: yields, per MoE layer
    in trace order, a list that each call of the layer appends `(ids (tokens, k), margin (tokens,))` to
    (see `_Observing`), for comparing a model's own routing with a replayed one."""
    sites = find_routers(model)
    seen: list[list] = [[] for _ in sites]
    active: list[_Observing] = []

    def enter(slot: int):
        def start() -> None:
            mode = _Observing(sites[slot], seen[slot])
            mode.__enter__()
            active.append(mode)

        return start

    def stop(_output) -> None:
        active.pop().__exit__(None, None, None)

    hooks = Hooks()
    try:
        for slot, site in enumerate(sites):
            hooks.override_selection(site, enter(slot), stop)
        yield seen
    finally:
        try:
            hooks.remove()
        finally:
            while active:
                active.pop().__exit__(None, None, None)


class _AuxForcing(TorchFunctionMode):
    """Active while the whole model runs with `output_router_logits`: the balance loss's top-k over the
    layers' logits takes the replayed selection, whether the family takes it layer by layer (n-th call:
    slot n, as transformers 5.25 does) or over all layers' logits concatenated (layers * tokens, E)."""

    def __init__(self, slots: list[_Slot], tokens: int, busy):
        super().__init__()
        self.slots, self.tokens, self.busy = slots, tokens, busy
        self.seen = 0  # per-layer top-k calls so far in this forward

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TOPK and not self.busy():
            x, k, dim, largest = _topk_args(args, kwargs)
            first = self.slots[0].site
            same = all(s.site.top_k == first.top_k and s.site.num_experts == first.num_experts for s in self.slots)
            selects = largest and k == first.top_k and dim in (-1, x.dim() - 1) and x.shape[-1] == first.num_experts
            rows = int(np.prod(x.shape[:-1])) if x.dim() == 2 else 0
            if same and selects and rows in (self.tokens, len(self.slots) * self.tokens):
                if rows == self.tokens:
                    slots = [self.slots[self.seen % len(self.slots)]]
                    self.seen += 1
                else:
                    slots = self.slots
                own = func(*args, **kwargs)
                ids = torch.cat([s.on(x.device)[0] for s in slots]).clamp(min=0)
                free = torch.cat([s.on(x.device)[1] for s in slots])[:, None]
                return torch.return_types.topk(
                    (torch.where(free, own.values, x.gather(-1, ids)), torch.where(free, own.indices, ids))
                )
        return func(*args, **kwargs)


@dataclass
class Replaying:
    """What `replay` yields: the sites it forces and how often each replaced its selection."""

    layers: list[int]  # decoder indices of the MoE layers, in trace order
    _slots: list[_Slot]

    @property
    def calls(self) -> list[int]:
        """Per MoE layer, the selections replaced so far (0 where every row routed freely)."""
        return [s.calls for s in self._slots]


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not torch.is_tensor(value):
        raise RoutelensError(f"replay: {what} must be an integer array or tensor, not {type(value).__name__}.")
    return value


def _slots(sites: list[RouterSite], experts: torch.Tensor, attention_mask) -> list[_Slot]:
    batch, seq, layers, k = experts.shape
    tokens = batch * seq
    if attention_mask is None:
        outside = torch.zeros(tokens, dtype=torch.bool)
    else:
        mask = _as_tensor(attention_mask, "attention_mask")
        if tuple(mask.shape) != (batch, seq):
            raise RoutelensError(
                f"replay: attention_mask has shape {tuple(mask.shape)} but experts cover (batch, seq) = "
                f"{(batch, seq)}; pass the forward's own attention_mask."
            )
        outside = (mask == 0).reshape(tokens).cpu()
    flat = experts.reshape(tokens, layers, k).long().cpu()
    out = []
    for slot, site in enumerate(sites):
        if site.top_k > k:
            raise RoutelensError(
                f"replay: MoE layer {site.layer} chooses {site.top_k} experts per token but experts hold {k}; "
                "pass (batch, seq, L, k) with k = the model's top_k."
            )
        ids = flat[:, slot, : site.top_k]
        free = outside | (ids < 0).any(-1)
        forced = ids[~free]
        if forced.numel() and bool((forced.sort(-1).values.diff(dim=-1) == 0).any()):
            raise RoutelensError(
                f"replay: a row of MoE layer {site.layer} names one expert twice; give distinct ids per token and "
                "layer (or a negative id to let the row route freely)."
            )
        out.append(_Slot(site, ids.contiguous(), free.contiguous()))
    return out


@contextmanager
def replay(
    model: nn.Module, experts: np.ndarray | torch.Tensor, attention_mask: np.ndarray | torch.Tensor | None = None
) -> Iterator[Replaying]:
    """While inside, every MoE layer of `model` routes each token to the given experts, with weights
    the family's own router computes from its live, unmasked scores at those ids (module docstring).

    `experts`: integer array or tensor (batch, seq, L, k), L = the model's MoE layers in trace order
    (`describe_model(model).moe_layers`), aligned with the `input_ids` of the forward; a row with a
    negative id, and every position where `attention_mask` is 0, routes freely. Works under
    `torch.no_grad()` and autograd; nothing of the model is changed after the block, even when it
    raises. Raises `RoutelensError` for a family replay refuses or experts of the wrong shape.
    """
    spec = describe_model(model)
    reason = why_refused(spec.family)
    if reason is not None:
        raise RoutelensError(f"replay: {spec.family} cannot be replayed exactly ({reason}); replay another family.")
    experts = _as_tensor(experts, "experts")
    if experts.is_floating_point() or experts.is_complex() or experts.dim() != 4:
        raise RoutelensError(
            f"replay: experts must be integer ids (batch, seq, L, k), not {experts.dtype} of shape "
            f"{tuple(experts.shape)}; pass a trace's experts column reshaped per sequence."
        )
    sites = find_routers(model)
    if experts.shape[2] != len(sites) or experts.shape[3] != spec.top_k:
        raise RoutelensError(
            f"replay: experts have shape {tuple(experts.shape)} but the model has {len(sites)} MoE layers "
            f"{spec.moe_layers} of top-k {spec.top_k}; pass (batch, seq, {len(sites)}, {spec.top_k})."
        )
    tokens = experts.shape[0] * experts.shape[1]
    slots = _slots(sites, experts, attention_mask)
    active: list[_Forcing] = []
    aux: list[_AuxForcing] = []

    def enter(slot: _Slot):
        def start() -> None:
            mode = _Forcing(slot, tokens)
            mode.__enter__()
            active.append((mode, slot.calls))

        return start

    def leave(slot: _Slot):
        def stop(output) -> None:
            mode, before = active.pop()
            mode.__exit__(None, None, None)
            if output is not None and slot.forced_rows and slot.calls == before:
                raise RoutelensError(
                    f"replay: MoE layer {slot.site.layer} chose its experts with no top-k over them that replay can "
                    "replace; this family cannot be replayed (report it with `routelens families --verify`)."
                )

        return stop

    def model_enter(kwargs: dict) -> None:
        config = getattr(model, "config", None)
        if kwargs.get("output_router_logits", getattr(config, "output_router_logits", False)):
            mode = _AuxForcing(slots, tokens, busy=lambda: bool(active))
            mode.__enter__()
            aux.append(mode)

    def model_leave(_output) -> None:
        if aux:
            aux.pop().__exit__(None, None, None)

    hooks = Hooks()
    try:
        for slot in slots:
            hooks.override_selection(slot.site, enter(slot), leave(slot))
        hooks.around_call(model, model_enter, model_leave)
        yield Replaying([s.site.layer for s in slots], slots)
    finally:
        try:
            hooks.remove()
        finally:
            while active:
                active.pop()[0].__exit__(None, None, None)
            while aux:
                aux.pop().__exit__(None, None, None)
