"""The L2 norm of each chosen expert's output before weighting, for `routelens trace --store-expert-norms`.

REAP (arXiv 2510.13999) ranks experts by how much they add to the block's output:
mean over the tokens routed to e of weight x ||expert_e(x)||. The weights are recorded anyway; the
norms are not visible from outside the experts module, which returns the weighted sum only. So a
forward hook on each experts module calls the module's own `forward` once more per choice slot j,
with weight 1 on slot j and 0 elsewhere: the result is, per token, the output of its j-th expert
alone, unweighted, computed by the family's own expert code (whatever its layout or kernel).
That costs k more expert passes per MoE layer, which is why it is a flag.

`take(experts)` aligns the norms with the recorded experts by id (the recorder may reorder the k
by weight), 0 for empty slots and zero-computation experts.
"""

from __future__ import annotations

import torch
from torch import nn

from routelens.errors import RoutelensError
from routelens.models.hooks import SiteHooks, experts_inputs


class ExpertNormRecorder(SiteHooks):
    """Context manager hooking every experts module of `model`; `take` returns (tokens, L, k) norms."""

    def __init__(self, model: nn.Module, spec):
        from routelens.models.families import find_routers

        super().__init__()
        self.spec = spec
        self._sites = find_routers(model)
        readers = [s.name for s in self._sites if not s.experts_see_routing]
        if readers:
            raise RoutelensError(
                f"--store-expert-norms needs experts called with (hidden, index, weights), but {readers[0]} "
                f"({spec.family}) is fed scaled inputs instead; trace without it."
            )

    def _register(self, hooks, slot: int, site) -> None:
        hooks.read_experts_output(site, self._on_call(slot, site.experts))

    def _on_call(self, slot: int, module: nn.Module):
        calls = self._seen[slot]  # (index, norms) per call

        def on_call(args, kwargs, output):
            # experts(hidden_states, top_k_index, top_k_weights), positional or by keyword
            hidden = args[0] if args else kwargs["hidden_states"]
            index, weights = experts_inputs(args, kwargs)
            width = index.shape[-1]
            norms = []
            for j in range(width):
                alone = torch.zeros_like(weights)
                alone[..., j] = 1
                # the module's own forward, not __call__: no hook runs again (the recorder's neither)
                out = module.forward(hidden, index, alone)
                norms.append(out.reshape(-1, out.shape[-1]).float().norm(dim=-1))
            calls.append((index.detach().reshape(-1, width), torch.stack(norms, dim=-1)))

        return on_call

    def take(self, experts: torch.Tensor) -> torch.Tensor:
        """(tokens, L, k) norms of the experts `experts` (the RoutingRecorder's take() of the same
        forward passes, (tokens, L, k)) hold, slot by slot; clears what was recorded."""
        per_layer = []
        for layer, calls in enumerate(self._seen):
            recorded = experts[:, layer]  # (tokens, k)
            if not calls:
                per_layer.append(torch.zeros(recorded.shape, device=recorded.device))
                continue
            index = torch.cat([c[0] for c in calls]).long().to(recorded.device)  # (tokens, width)
            norms = torch.cat([c[1] for c in calls]).to(recorded.device)  # (tokens, width)
            match = recorded[:, :, None] == index[:, None, :]  # (tokens, k, width)
            at = match.float().argmax(dim=-1)  # (tokens, k)
            found = match.any(dim=-1) & (recorded < self.spec.num_experts)
            per_layer.append(norms.gather(1, at) * found)
            calls.clear()
        return torch.stack(per_layer, dim=1)
