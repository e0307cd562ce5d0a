"""Record what a MoE model's routers decided, with forward hooks that live only inside `with`.

    with RoutingRecorder(model) as rec:
        model(input_ids, attention_mask=mask)
        routing = rec.take()          # experts (L, B*T, k), weights (L, B*T, k)

A forward hook on every router module keeps references to the indices and weights the router
returned (detached, on their device: no copy, no host sync per layer); `take()` concatenates
and stacks them once per call. The order of tokens is the order the routers saw them: B*T
flattened row-major over (batch, time), forward passes one after another. Padding positions are
routed like any token and returned too; dropping them is the caller's job (it has the mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from routelens.capture.families import RouterSite, RoutingSpec, describe_model, find_routers
from routelens.errors import RoutelensError


@dataclass
class Routing:
    """Routing of the tokens of one or more forward passes."""

    experts: torch.Tensor  # (L, tokens, k) int64, first choice first
    weights: torch.Tensor  # (L, tokens, k) float32, combination weights applied to each chosen expert
    probs: torch.Tensor | None = None  # (L, tokens, E) float32, the family's full scoring; with store_probs

    def __post_init__(self):
        assert self.experts.shape == self.weights.shape, (self.experts.shape, self.weights.shape)


class RoutingRecorder:
    """Context manager that hooks a model's routers; `take()` returns what they decided."""

    def __init__(self, model: nn.Module, spec: RoutingSpec | None = None, *, store_probs: bool = False):
        self.model = model
        self.spec = spec if spec is not None else describe_model(model)
        self.store_probs = store_probs
        self._sites: list[RouterSite] = find_routers(model)
        found = [s.layer for s in self._sites]
        if found != list(self.spec.moe_layers):
            raise RoutelensError(
                f"the RoutingSpec lists MoE layers {list(self.spec.moe_layers)} but the model's routers sit in "
                f"layers {found}; build the spec with describe_model(model) for this model."
            )
        self._best_first = self._sites[0].adapter.best_first
        self._scoring = self._sites[0].adapter.scoring
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # per MoE layer, one (index, weights, logits|None) per forward pass since the last take()
        self._buffer: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = []

    def __enter__(self) -> RoutingRecorder:
        assert not self._handles, "RoutingRecorder is not re-entrant"
        self._buffer = [[] for _ in self._sites]
        try:
            for slot, site in enumerate(self._sites):
                self._handles.append(site.router.register_forward_hook(self._hook(slot, site)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove()
        self._buffer = []

    def _remove(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles = []

    def _hook(self, slot: int, site: RouterSite):
        read, router, owner, keep_logits = site.adapter.read, site.router, site.owner, self.store_probs
        buffer = self._buffer[slot]

        def hook(module, args, output):
            index, weights, logits = read(router, owner, output)
            buffer.append((index.detach(), weights.detach(), logits.detach() if keep_logits else None))

        return hook

    def take(self) -> Routing:
        """Routing of the forward passes since the last take(); clears the buffer."""
        if not self._handles:
            raise RoutelensError("RoutingRecorder.take() was called outside its `with` block; call it inside.")
        counts = [len(b) for b in self._buffer]
        if len(set(counts)) != 1:
            missing = [s.name for s, n in zip(self._sites, counts) if n < max(counts)]
            raise RoutelensError(
                f"routers {missing} did not run in every forward pass (calls per layer {counts}); a fused kernel "
                "probably replaced the MoE block: load the model without hub kernels (use_kernels=False)."
            )
        per_layer = [self._layer(b) for b in self._buffer]
        for b in self._buffer:
            b.clear()
        # layers may sit on different devices (device_map="auto"): gather on the first layer's
        device = per_layer[0][0].device
        experts = torch.stack([p[0].to(device) for p in per_layer])  # (L, tokens, k)
        weights = torch.stack([p[1].to(device) for p in per_layer])  # (L, tokens, k)
        probs = torch.stack([p[2].to(device) for p in per_layer]) if self.store_probs else None  # (L, tokens, E)
        if not self._best_first:
            # These routers take top-k with sorted=False; order the k by weight, largest first,
            # so that index 0 is the first choice as the trace format promises.
            weights, order = weights.sort(dim=-1, descending=True, stable=True)
            experts = experts.gather(-1, order)
        # Some experts implementations mark masked tokens with the sentinel index E; routers never
        # emit it, and a trace must never hold it.
        assert experts.numel() == 0 or int(experts.max()) < self.spec.num_experts, "sentinel expert id recorded"
        return Routing(experts=experts, weights=weights, probs=probs)

    def _layer(self, calls) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        k, num_experts = self.spec.top_k, self.spec.num_experts
        if not calls:
            empty = torch.empty(0, k)
            probs = torch.empty(0, num_experts) if self.store_probs else None
            return empty.long(), empty, probs
        index = torch.cat([c[0].reshape(-1, k) for c in calls]).long()  # (tokens, k)
        weights = torch.cat([c[1].reshape(-1, k) for c in calls]).float()  # (tokens, k)
        probs = None
        if self.store_probs:
            probs = self._scoring.apply(torch.cat([c[2].reshape(-1, num_experts) for c in calls]))  # (tokens, E)
        return index, weights, probs
