"""Record what a MoE model's experts computed with, with hooks that live only inside `with`.

    with RoutingRecorder(model) as rec:
        model(input_ids, attention_mask=mask)
        routing = rec.take()          # experts (B*T, L, k), weights (B*T, L, k)

A forward pre-hook on every experts module keeps references to the `top_k_index` and
`top_k_weights` it was called with (detached, on their device: no copy, no host sync per layer);
families whose experts never see indices (Llama 4) are read at the router instead. `take()`
concatenates and stacks them once per call. The order of tokens is the order the experts saw
them: B*T flattened row-major over (batch, time), forward passes one after another. Padding
positions are routed like any token and returned too; dropping them is the caller's job.

Layers with fewer than `spec.top_k` experts per token are padded with `spec.no_expert_id` and
weight 0; so is any index at or beyond it (the sentinel some experts implementations use for
masked tokens), which is therefore never recorded as an expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from routelens.errors import RoutelensError
from routelens.models.families import RouterSite, RoutingSpec, Scoring, describe_model, find_routers
from routelens.models.hooks import Hooks


@dataclass
class Routing:
    """Routing of the tokens of one or more forward passes."""

    experts: torch.Tensor  # (tokens, L, k) int64, first choice first
    weights: torch.Tensor  # (tokens, L, k) float32, combination weights applied to each chosen expert
    probs: torch.Tensor | None = None  # (tokens, L, num_ids) float32, the family's full scoring; with store_probs

    def __post_init__(self):
        assert self.experts.shape == self.weights.shape, (self.experts.shape, self.weights.shape)


def _logits(output, index: int) -> torch.Tensor:
    return (output[index] if isinstance(output, (tuple, list)) else output).detach()


class RoutingRecorder:
    """Context manager that hooks a model's MoE blocks; `take()` returns what their experts computed with."""

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
        first = self._sites[0]
        self._scoring = first.adapter.scoring or Scoring.of_rule(self.spec.rule)
        self._hooks = Hooks()
        # per MoE layer, one (index, weights) per forward pass since the last take(); logits apart
        self._buffer: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        self._logits: list[list[torch.Tensor]] = []

    @property
    def scoring(self) -> Scoring:
        """How the routers' recorded output becomes `probs` (softmax, sigmoid, or already probabilities)."""
        return self._scoring

    def __enter__(self) -> RoutingRecorder:
        assert not len(self._hooks), "RoutingRecorder is not re-entrant"
        self._buffer = [[] for _ in self._sites]
        self._logits = [[] for _ in self._sites]
        try:
            for slot, site in enumerate(self._sites):
                if site.reads_router:
                    self._hooks.read_router_output(site, self._on_router(slot, site))
                else:
                    self._hooks.read_experts_input(site, lambda i, w, buffer=self._buffer[slot]: buffer.append((i, w)))
                    if self.store_probs:
                        at, logits = site.logits_index, self._logits[slot]
                        self._hooks.read_router_output(site, lambda out, at=at, lg=logits: lg.append(_logits(out, at)))
        except BaseException:
            self._hooks.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._hooks.remove()
        self._buffer = []
        self._logits = []

    def _on_router(self, slot: int, site: RouterSite):
        read, router, owner, keep_logits = site.adapter.read, site.router, site.owner, self.store_probs
        buffer, logits, at = self._buffer[slot], self._logits[slot], site.logits_index

        def on_output(output):
            index, weights = read(router, owner, output)
            buffer.append((index.detach(), weights.detach()))
            if keep_logits:
                logits.append(_logits(output, at))

        return on_output

    def take(self) -> Routing:
        """Routing of the forward passes since the last take(); clears the buffer."""
        if not len(self._hooks):
            raise RoutelensError("RoutingRecorder.take() was called outside its `with` block; call it inside.")
        counts = [len(b) for b in self._buffer]
        if len(set(counts)) != 1:
            missing = [s.name for s, n in zip(self._sites, counts) if n < max(counts)]
            raise RoutelensError(
                f"experts {missing} did not run in every forward pass (calls per layer {counts}); a fused kernel "
                "probably replaced the MoE block: load the model without hub kernels (use_kernels=False)."
            )
        per_layer = [self._layer(site, b, lg) for site, b, lg in zip(self._sites, self._buffer, self._logits)]
        for b, lg in zip(self._buffer, self._logits):
            b.clear()
            lg.clear()
        # layers may sit on different devices (device_map="auto"): gather on the first layer's
        device = per_layer[0][0].device
        # token-major, as every public array (docs/glossary.md): the layer axis is the MoE slot
        experts = torch.stack([p[0].to(device) for p in per_layer], dim=1)  # (tokens, L, k)
        weights = torch.stack([p[1].to(device) for p in per_layer], dim=1)  # (tokens, L, k)
        probs = (
            torch.stack([p[2].to(device) for p in per_layer], dim=1) if self.store_probs else None
        )  # (tokens, L, ids)
        return Routing(experts=experts, weights=weights, probs=probs)

    def _layer(self, site: RouterSite, calls, logits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        k, num_experts, empty_id = self.spec.top_k, self.spec.num_experts, self.spec.no_expert_id
        probs = None
        if self.store_probs:
            probs = (
                # scored over all the router's outputs (zero-computation experts included), then the E routed
                self._scoring.apply(torch.cat([c.reshape(-1, c.shape[-1]) for c in logits]))[:, :num_experts]
                if logits
                else torch.empty(0, num_experts)
            )  # (tokens, E)
        if not calls:
            empty = torch.empty(0, k)
            return empty.long(), empty, probs
        width = site.top_k
        index = torch.cat([c[0].reshape(-1, width) for c in calls]).long()  # (tokens, k of this layer)
        weights = torch.cat([c[1].reshape(-1, width) for c in calls]).float()
        # an index at or past the empty id is the experts implementation's masked-token sentinel:
        # those experts never ran, so the slot is recorded as empty
        masked = index >= empty_id
        if bool(masked.any()):
            index = index.masked_fill(masked, empty_id)
            weights = weights.masked_fill(masked, 0.0)
        if width < k:  # a layer with a smaller k than the largest: pad with empty slots
            index = torch.cat([index, index.new_full((index.shape[0], k - width), empty_id)], dim=1)
            weights = torch.cat([weights, weights.new_zeros((weights.shape[0], k - width))], dim=1)
        if not site.best_first:
            # These routers take top-k with sorted=False; order the k by weight, largest first,
            # so that index 0 is the first choice as the trace format promises (empty slots last).
            key = weights.masked_fill(index == empty_id, float("-inf"))
            order = key.sort(dim=-1, descending=True, stable=True).indices
            index, weights = index.gather(-1, order), weights.gather(-1, order)
        return index, weights, probs
