"""Expert-parallel load simulation: device imbalance and capacity-factor drops per batch.

Under expert parallelism each device holds some experts, and a batch's tokens are sent to the
devices that hold their experts; the slowest device sets the pace, and a fixed per-expert
capacity (capacity factor CF) drops the assignments beyond it. Routing locality makes the
tokens of a batch agree on experts more than a random batch would, so real order
over-subscribes hot experts; comparing with a shuffled order measures how much.

Placements: round-robin (expert e on device e mod D), or balanced from the trace's own expert
loads in the spirit of DeepSeek's EPLB — R redundant slots (default one per device, as in
DeepSeek-V3's prefill deployment: 8 experts + 1 redundant per GPU) are spread over the devices and filled by replicating the most loaded experts
(greedily, each time the expert with the largest load per replica), then the replicas
are packed onto devices by descending load, each onto the least loaded device with a free slot
(preferring one without a replica of the same expert). A replicated expert's load is split
evenly across its replicas, and each replica has the full per-expert capacity.

The kernels below are pure numpy functions of count arrays; `simulate_balance` streams a trace
into per-batch expert counts (batches x layers x E integers) and applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.errors import RoutelensError
from routelens.simulate.policies import Placement
from routelens.store import Trace, open_trace


@dataclass
class BalanceConfig:
    devices: int = 8  # expert-parallel devices D
    batch_tokens: int = 4096  # tokens per batch B, consecutive in trace order
    cfs: tuple[float, ...] = (1.0, 1.25, 2.0)  # capacity factors: capacity = floor(B * k / E * CF) per expert
    placements: tuple[Placement, ...] = (Placement.ROUND_ROBIN, Placement.BALANCED)
    redundant_experts: int | None = None  # extra expert slots for replicas (balanced); None: one per device

    def __post_init__(self):
        if self.devices < 1:
            raise RoutelensError(f"--devices {self.devices} must be at least 1.")
        if self.batch_tokens < 1:
            raise RoutelensError(f"--batch-tokens {self.batch_tokens} must be at least 1 token.")
        self.cfs = tuple(float(c) for c in self.cfs)
        if not self.cfs or min(self.cfs) <= 0:
            raise RoutelensError(f"capacity factors {list(self.cfs)} must be positive, e.g. --cf 1.25.")
        try:
            self.placements = tuple(Placement(p) for p in self.placements)
        except ValueError as exc:
            raise RoutelensError(f"{exc}; choose among {', '.join(p.value for p in Placement)}.") from None
        if self.redundant_experts is not None and self.redundant_experts < 0:
            raise RoutelensError(f"--redundant-experts {self.redundant_experts} must be 0 or more.")


# -- pure kernels ----------------------------------------------------------------------------
def round_robin_placement(num_experts: int, devices: int) -> np.ndarray:
    """(E, D) replica counts: expert e on device e mod D."""
    placement = np.zeros((num_experts, devices), np.int64)
    placement[np.arange(num_experts), np.arange(num_experts) % devices] = 1
    return placement


def balanced_placement(load: np.ndarray, devices: int, redundant: int) -> np.ndarray:
    """(E, D) replica counts from expert loads (E,): replicate the hot experts, pack by load.

    The E + redundant slots are spread evenly over the devices (the first (E + R) mod D devices
    get one more).
    """
    E = len(load)
    slots = E + redundant
    load = np.asarray(load, np.float64)
    replicas = np.ones(E, np.int64)
    for _ in range(redundant):  # each spare slot to the expert with the most load per replica
        replicas[np.argmax(load / replicas)] += 1
    # Replicas in descending load (stable: lower expert id first among equals).
    experts = np.repeat(np.arange(E), replicas)
    share = (load / replicas)[experts]
    order = np.argsort(-share, kind="stable")
    placement = np.zeros((E, devices), np.int64)
    device_load = np.zeros(devices)
    free = np.full(devices, slots // devices) + (np.arange(devices) < slots % devices)
    for e, w in zip(experts[order], share[order]):
        open_ = free > 0
        fresh = open_ & (placement[e] == 0)
        candidates = np.flatnonzero(fresh if fresh.any() else open_)
        d = candidates[np.argmin(device_load[candidates])]
        placement[e, d] += 1
        device_load[d] += w
        free[d] -= 1
    return placement


def batch_counts(experts: np.ndarray, num_experts: int, batch_tokens: int, order: np.ndarray | None = None):
    """Assignments per batch and expert for one layer's stream (tokens, k).

    `order` (tokens,), when given, is the position of each token in the replayed order (a
    shuffle). Returns counts (batches, E) int64 and batch sizes in tokens (batches,).
    """
    T = len(experts)
    pos = np.arange(T) if order is None else np.asarray(order)
    nb = -(-T // batch_tokens)
    batch = pos // batch_tokens  # (tokens,)
    key = batch[:, None] * num_experts + experts  # (tokens, k)
    counts = np.bincount(key.reshape(-1), minlength=nb * num_experts).reshape(nb, num_experts)
    sizes = np.bincount(batch, minlength=nb)
    return counts, sizes


def expert_capacity(batch_sizes: np.ndarray, top_k: int, num_experts: int, cf: float) -> np.ndarray:
    """Per-expert (per-replica) capacity of each batch: floor(B * k / E * CF), as Switch/GShard."""
    return np.floor(np.asarray(batch_sizes) * top_k / num_experts * cf + 1e-9).astype(np.int64)


def dropped_assignments(counts: np.ndarray, capacity: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """Assignments dropped per batch (batches,): an expert with r replicas takes r x capacity."""
    return np.maximum(counts - replicas[None, :] * capacity[:, None], 0).sum(axis=1)


def device_loads(counts: np.ndarray, placement: np.ndarray) -> np.ndarray:
    """Assignments each device receives per batch (batches, D), replicas splitting evenly."""
    replicas = placement.sum(axis=1)
    return (counts / replicas[None, :]) @ placement


def imbalance(loads: np.ndarray) -> np.ndarray:
    """max / mean device load per batch (batches,); 1.0 is perfect balance."""
    mean = loads.mean(axis=1)
    return np.divide(loads.max(axis=1), mean, out=np.ones_like(mean), where=mean > 0)


# -- over a trace ------------------------------------------------------------------------------
def _gather_counts(trace: Trace, batch_tokens: int, shuffle_seed: int | None):
    """Per-batch counts (batches, layers, E) for trace order and, if seeded, a shuffled order."""
    T, L, E = trace.num_tokens, len(trace.layers), trace.num_experts
    nb = -(-T // batch_tokens)
    perm = np.random.default_rng(shuffle_seed).permutation(T) if shuffle_seed is not None else None
    real = np.zeros(nb * L * E, np.int64)
    shuf = np.zeros(nb * L * E, np.int64) if perm is not None else None
    offset = 0
    layer_key = (np.arange(L) * E)[None, :, None]  # (1, layers, 1)
    for chunk in trace.iter_chunks():
        n = len(chunk)
        if chunk.experts.size and int(chunk.experts.max()) >= E:
            raise RoutelensError(f"the trace at {trace.path} routes to expert ids >= num_experts={E}; re-trace it.")
        g = np.arange(offset, offset + n)
        for out, pos in ((real, g), (shuf, None if perm is None else perm[g])):
            if out is None:
                continue
            key = (pos // batch_tokens)[:, None, None] * (L * E) + layer_key + chunk.experts  # (n, layers, k)
            out += np.bincount(key.reshape(-1), minlength=nb * L * E)
        offset += n
    sizes = np.bincount(np.arange(T) // batch_tokens, minlength=nb)
    shape = (nb, L, E)
    return real.reshape(shape), None if shuf is None else shuf.reshape(shape), sizes


def _summarise(counts, sizes, placement, top_k, cfs) -> dict:
    """Metrics of one layer and placement: {cf: {...}} (pure)."""
    E = counts.shape[1]
    replicas = placement.sum(axis=1)
    loads = device_loads(counts, placement)  # (batches, D)
    ratio = imbalance(loads)
    out = {}
    for cf in cfs:
        dropped = dropped_assignments(counts, expert_capacity(sizes, top_k, E, cf), replicas)
        out[str(cf)] = {
            "dropped": float(dropped.sum()) / float(sizes.sum() * top_k),
            "imbalance_max_mean": float(ratio.mean()),
            "imbalance_max_mean_worst": float(ratio.max()),
            "max_device_assignments": float(loads.max(axis=1).mean()),
            "mean_device_assignments": float(loads.mean()),
            "dropped_assignments": int(dropped.sum()),
        }
    return out


def simulate_balance(
    trace: Trace | str | Path,
    devices: int = 8,
    batch_tokens: int = 4096,
    cfs=(1.0, 1.25, 2.0),
    placements=(Placement.ROUND_ROBIN, Placement.BALANCED),
    *,
    redundant_experts: int | None = None,
    compare_shuffled: bool = True,
    seed: int = 0,
) -> dict:
    """Expert-parallel load of `trace` per placement and capacity factor.

    Returns `balance` {placement: {cf: {dropped, imbalance_max_mean}}} (dropped: share of all
    assignments, all layers; imbalance: mean over layers and batches of max/mean device load),
    `balance_detail` {placement: {layer: {cf: metrics}}}, `balance_shuffled` (as `balance`, tokens
    in a seeded random order) and `balance_meta`.
    """
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    placements = (placements,) if isinstance(placements, str) else placements
    cfs = (cfs,) if isinstance(cfs, int | float) else cfs
    config = BalanceConfig(devices, batch_tokens, tuple(cfs), tuple(placements), redundant_experts)
    E, k = trace.num_experts, trace.top_k
    redundant = config.devices if config.redundant_experts is None else config.redundant_experts
    real, shuf, sizes = _gather_counts(trace, config.batch_tokens, seed if compare_shuffled else None)
    out: dict = {"balance": {}, "balance_detail": {}}
    if shuf is not None:
        out["balance_shuffled"] = {}
    replicas_meta: dict = {}
    for placement_name in config.placements:
        per_layer, per_layer_shuf = {}, {}
        for li, layer in enumerate(trace.layers):
            if placement_name is Placement.ROUND_ROBIN:
                placement = round_robin_placement(E, config.devices)
            else:
                placement = balanced_placement(real[:, li].sum(axis=0), config.devices, redundant)
                replicas_meta[str(layer)] = placement.sum(axis=1).tolist()
            per_layer[str(layer)] = _summarise(real[:, li], sizes, placement, k, config.cfs)
            if shuf is not None:
                per_layer_shuf[str(layer)] = _summarise(shuf[:, li], sizes, placement, k, config.cfs)
        out["balance_detail"][placement_name.value] = per_layer
        out["balance"][placement_name.value] = _pool(per_layer, config.cfs)
        if shuf is not None:
            out["balance_shuffled"][placement_name.value] = _pool(per_layer_shuf, config.cfs)
    out["balance_meta"] = {
        "devices": config.devices,
        "batch_tokens": config.batch_tokens,
        "batches": int(len(sizes)),
        "tokens": int(sizes.sum()),
        "redundant_experts": redundant,
        "capacity_per_expert": {str(cf): int(expert_capacity([config.batch_tokens], k, E, cf)[0]) for cf in config.cfs},
        "balanced_replicas": replicas_meta,
        "shuffle_seed": seed if compare_shuffled else None,
    }
    return out


def _pool(per_layer: dict, cfs) -> dict:
    """Pool layers: dropped share over all assignments, imbalance averaged over layers."""
    pooled = {}
    for cf in cfs:
        rows = [layer[str(cf)] for layer in per_layer.values()]
        pooled[str(cf)] = {
            "dropped": float(np.mean([r["dropped"] for r in rows])),  # every layer has the same assignments
            "imbalance_max_mean": float(np.mean([r["imbalance_max_mean"] for r in rows])),
        }
    return pooled
