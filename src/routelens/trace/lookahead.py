"""Lookahead routing for `routelens trace --lookahead D`: what later layers' routers would choose
from an earlier layer's input, the predictor offloading systems prefetch with.

Pre-gating (as the MoE offloading papers call it) applies the router of layer l + d to the hidden
state that reaches layer l, so that layer l + d's experts can be loaded while layers l..l+d-1
compute. A forward pre-hook on every router keeps the input the router of MoE layer l received;
after the forward pass, the router module of the MoE layer d steps later is applied to it (its
own `forward`, so no recording hook runs again) and its top-k indices are kept, best first:
column `lookahead` (tokens, L, D, k) int16, filled with LOOKAHEAD_FILL (-1) where MoE layer l + d
does not exist (the last d layers), where that layer routes by token id (hash-routed layers have
no router to apply) and in the slots beyond a layer's own k.
"""

from __future__ import annotations

import torch
from torch import nn

from routelens.errors import RoutelensError
from routelens.models.hooks import SiteHooks
from routelens.store.schema import LOOKAHEAD_FILL


class LookaheadRecorder(SiteHooks):
    """Context manager hooking every router of `model`; `take()` returns (tokens, L, D, k) int16."""

    def __init__(self, model: nn.Module, spec, depth: int):
        from routelens.models.families import find_routers

        super().__init__()
        self.spec, self.depth = spec, depth
        self._sites = find_routers(model)

    def _register(self, hooks, slot: int, site) -> None:
        inputs = self._seen[slot]
        # (tokens, H), in the recorder's token order
        hooks.read_router_input(site, lambda hidden: inputs.append(hidden.reshape(-1, hidden.shape[-1])))

    def take(self) -> torch.Tensor:
        """(tokens, L, D, k) int16 of the forward passes since the last take, on the CPU; clears them."""
        L, k = len(self._sites), self.spec.top_k
        hidden = [torch.cat(calls) if calls else None for calls in self._seen]
        tokens = next(h.shape[0] for h in hidden if h is not None)
        out = torch.full((tokens, L, self.depth, k), LOOKAHEAD_FILL, dtype=torch.int16)
        for layer, x in enumerate(hidden):
            for d in range(1, self.depth + 1):
                if x is None or layer + d >= L or self._sites[layer + d].hash_routed:
                    continue
                index = self._top_k(self._sites[layer + d], x)
                out[:, layer, d - 1, : index.shape[1]] = index.to(torch.int16)
        for calls in self._seen:
            calls.clear()
        return out

    def _top_k(self, site, x: torch.Tensor) -> torch.Tensor:
        """The top-k indices (tokens, k) of `site`'s router applied to `x`, best first, on the CPU."""
        device = next(site.router.parameters(), x).device
        result = site.router.forward(x.to(device))
        parts = list(result) if isinstance(result, tuple | list) else [result]
        index = next((p for p in parts if torch.is_tensor(p) and not p.is_floating_point() and p.dim() == 2), None)
        if index is None:
            raise RoutelensError(
                f"--lookahead needs routers that return their top-k indices, but {site.name.rsplit('.', 1)[0]}'s "
                f"router ({self.spec.family}) does not; trace without --lookahead."
            )
        if not site.best_first:  # order the unsorted top-k by its weights, as the recorder orders experts
            weights = next(
                (p for p in parts if torch.is_tensor(p) and p.is_floating_point() and p.shape == index.shape), None
            )
            if weights is not None:
                index = index.gather(1, weights.argsort(dim=1, descending=True))
        return index.cpu()
