"""Per-layer expert-cache budgets: which layers deserve the memory.

Given a total of expert memory for the whole model (`--budget-bytes TOTAL`, i.e. S = TOTAL /
expert bytes slots), each layer's hit curve from the cache simulator (hits at every capacity
0..E; 0 means every expert is streamed) says what one more slot buys there. `best_split` gives
the split of S slots over the layers with the most hits in total — exact, by dynamic programming
over layers (where every curve is concave this is the split that hands each slot to the layer
with the largest marginal gain, one at a time; the program needs no concavity, and LRU curves
are not always concave). `uniform_split` is the baseline at the same bytes: S // L slots per
layer, the first S mod L layers one more. Pure functions of arrays; `budget_report` turns the
simulator's per-layer results into the JSON `cache_budget`.
"""

from __future__ import annotations

import numpy as np


def best_split(hits: np.ndarray, slots: int) -> np.ndarray:
    """Capacities (L,) with sum <= `slots` maximising the total of hits[l, capacity[l]].

    `hits` (L, C + 1): hits of layer l at capacity 0..C (row values need not be monotone). Ties go
    to the smaller capacity of the later layers, so the answer is deterministic.
    """
    L, width = hits.shape
    slots = int(min(slots, L * (width - 1)))
    best = np.zeros(slots + 1)  # best[s]: the most hits of the layers so far with at most s slots
    choice = np.zeros((L, slots + 1), np.int64)
    for layer in range(L):
        options = np.full((width, slots + 1), -np.inf)  # options[c, s]: capacity c here, s slots in all
        for c in range(min(width, slots + 1)):
            options[c, c:] = hits[layer, c] + best[: slots + 1 - c]
        choice[layer] = np.argmax(options, axis=0)
        best = options.max(axis=0)
    split = np.zeros(L, np.int64)
    s = slots
    for layer in range(L - 1, -1, -1):  # walk the choices back from the whole budget
        split[layer] = choice[layer, s]
        s -= split[layer]
    return split


def uniform_split(layers: int, slots: int, capacity_max: int) -> np.ndarray:
    """The same slots spread evenly: slots // layers each, the first slots % layers one more,
    capped at `capacity_max` (E) per layer."""
    split = np.full(layers, slots // layers, np.int64) + (np.arange(layers) < slots % layers)
    return np.minimum(split, capacity_max)


def budget_report(
    hit_rate: dict,
    loads: dict,
    layers: list[str],
    num_experts: int,
    top_k: int,
    expert_bytes: int,
    budgets,
    seconds_per_byte: float | None,
) -> dict:
    """`cache_budget` of one policy: {total bytes: {slots, best, uniform}} from its per-layer
    `hit_rate` and `loads` {layer: {capacity: value}} at every capacity 1..E (capacity 0, an
    expert streamed at every request: hit rate 0, k loads per token)."""
    caps = range(num_experts + 1)

    def curve(by_layer: dict, at_zero: float) -> np.ndarray:  # (L, E + 1)
        return np.array([[at_zero if c == 0 else by_layer[layer][str(c)] for c in caps] for layer in layers])

    hits, moved = curve(hit_rate, 0.0), curve(loads, float(top_k))
    out = {}
    for total in budgets:
        slots = int(total // expert_bytes)
        row: dict = {"slots": slots}
        for name, split in (
            ("best", best_split(hits, slots)),
            ("uniform", uniform_split(len(layers), slots, num_experts)),
        ):
            picked = np.arange(len(layers)), split
            entry = {
                "split": {layer: int(c) for layer, c in zip(layers, split)},
                "hit_rate": float(hits[picked].mean()),  # every layer serves the same requests
                "loads_per_token": float(moved[picked].sum()),  # through all layers
                "bytes": int(split.sum()) * expert_bytes,
            }
            if seconds_per_byte is not None:
                entry["load_seconds_per_token"] = entry["loads_per_token"] * expert_bytes * seconds_per_byte
            row[name] = entry
        out[str(int(total))] = row
    return out
