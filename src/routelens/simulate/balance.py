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
evenly across its replicas, and so is its capacity: capacity belongs to the logical expert
(`routelens.training.capacity.expert_capacity`, the rule training and evaluation use), so every
placement is compared at the same total slots, and replication moves load between devices
without adding slots.

The kernels below are pure numpy functions of count arrays; `simulate_balance` streams a trace
into per-batch expert counts and applies them, with memory that does not grow with the trace:
counts are held for a group of batches at a time (`memory_bytes`; one group, hence one pass over
the trace, unless batches x layers x E x 4 bytes exceeds it), and the shuffled order is drawn
token by token without storing a permutation (`ShuffledBatches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.config import build_config, setting
from routelens.errors import RoutelensError
from routelens.models.capacity import expert_capacity as capacity_rule
from routelens.simulate.batches import DecodeBatches, ShuffledBatches, document_lengths, stream_counts
from routelens.simulate.output import check_output, write_output
from routelens.simulate.policies import Placement
from routelens.store import Trace, open_trace

DEFAULT_MEMORY = 256 << 20  # bytes of per-batch counts held at once (trace and shuffled orders)


@dataclass
class BalanceConfig:
    devices: int = setting(8, "Expert-parallel devices.")
    batch_tokens: int = setting(4096, "Tokens per batch, consecutive in trace order.")
    cfs: tuple[float, ...] = setting(
        (1.0, 1.25, 2.0),
        "Capacity factor (capacity = ceil(B x k / E x CF) per expert, shared by its replicas), repeatable.",
    )
    placements: tuple[Placement, ...] = setting(
        (Placement.ROUND_ROBIN, Placement.BALANCED), "Expert placement, repeatable."
    )
    redundant_experts: int | None = setting(
        None, "Spare expert slots for replicas in `balanced`.", shown_default="one per device"
    )
    decode_batch: int | None = setting(
        None,
        "Also batch B concurrent sequences, one token of each per step (decode), beside consecutive tokens.",
        shown_default="none",
    )
    compare_shuffled: bool = True  # also measure a seeded shuffled order (the locality control)
    seed: int = setting(0, "Seed of the shuffled-order control.")
    memory_bytes: int = DEFAULT_MEMORY  # per-batch counts held at once (one pass over the trace per group)
    rows: int = 1 << 20  # rows per chunk read at once

    def __post_init__(self):
        if self.devices < 1:
            raise RoutelensError(f"--devices {self.devices} must be at least 1.")
        if self.batch_tokens < 1:
            raise RoutelensError(f"--batch-tokens {self.batch_tokens} must be at least 1 token.")
        self.cfs = tuple(float(c) for c in ((self.cfs,) if isinstance(self.cfs, int | float) else self.cfs))
        if not self.cfs or min(self.cfs) <= 0:
            raise RoutelensError(f"capacity factors {list(self.cfs)} must be positive, e.g. --cf 1.25.")
        try:
            placements = (self.placements,) if isinstance(self.placements, str) else self.placements
            self.placements = tuple(Placement(p) for p in placements)
        except ValueError as exc:
            raise RoutelensError(f"{exc}; choose among {', '.join(p.value for p in Placement)}.") from None
        if self.decode_batch is not None and self.decode_batch < 1:
            raise RoutelensError(f"--decode-batch {self.decode_batch} must be at least 1 sequence.")
        if self.redundant_experts is not None and self.redundant_experts < 0:
            raise RoutelensError(f"--redundant-experts {self.redundant_experts} must be 0 or more.")
        if self.memory_bytes < 1 or self.rows < 1:
            raise RoutelensError(f"memory_bytes={self.memory_bytes} and rows={self.rows} must be positive.")


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
    """Capacity of each logical expert per batch (batches,): `training.capacity.expert_capacity`,
    ceil(B x k / E x CF), the one rule of training, evaluation and simulation."""
    sizes = np.asarray(batch_sizes, np.int64)
    distinct, where = np.unique(sizes, return_inverse=True)  # batches share a size: one call per size
    values = np.array([capacity_rule(int(n), num_experts, top_k, cf) for n in distinct], np.int64)
    return values[where.reshape(sizes.shape)]


def split_evenly(total: np.ndarray, parts: np.ndarray, j: int) -> np.ndarray:
    """Share j of `total` split into `parts` integer shares that differ by at most one, the larger
    first: total // parts + (j < total % parts); 0 where j >= parts. Broadcasts."""
    parts = np.maximum(parts, 1)
    return np.where(j < parts, total // parts + (j < total % parts), 0)


def dropped_assignments(counts: np.ndarray, capacity: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """Assignments dropped per batch (batches,). Expert e with r replicas has its count and its
    capacity (batches,) each split evenly over them (`split_evenly`), and each replica drops what
    exceeds its share of the capacity. Both splits put the larger shares first, so this equals
    max(0, count - capacity) per logical expert: replicas never add capacity."""
    counts = np.asarray(counts, np.int64)
    replicas = np.asarray(replicas, np.int64)[None, :]  # (1, E)
    capacity = np.asarray(capacity, np.int64)[:, None]  # (batches, 1)
    dropped = np.zeros(len(counts), np.int64)
    for j in range(int(replicas.max(initial=1))):
        dropped += np.maximum(split_evenly(counts, replicas, j) - split_evenly(capacity, replicas, j), 0).sum(axis=1)
    return dropped


def device_loads(counts: np.ndarray, placement: np.ndarray) -> np.ndarray:
    """Assignments each device receives per batch (batches, D), replicas splitting evenly."""
    replicas = placement.sum(axis=1)
    return (counts / replicas[None, :]) @ placement


def imbalance(loads: np.ndarray) -> np.ndarray:
    """max / mean device load per batch (batches,); 1.0 is perfect balance."""
    mean = loads.mean(axis=1)
    return np.divide(loads.max(axis=1), mean, out=np.ones_like(mean), where=mean > 0)


# -- over a trace ------------------------------------------------------------------------------


def _batch_sums(counts, sizes, placement, top_k, cfs) -> dict:
    """Sums over a group of batches (pure): (batches, E) counts -> what `_metrics` averages."""
    E = counts.shape[1]
    replicas = placement.sum(axis=1)
    loads = device_loads(counts, placement)  # (batches, D)
    ratio = imbalance(loads)
    return {
        "ratio": float(ratio.sum()),
        "ratio_max": float(ratio.max()),
        "max_load": float(loads.max(axis=1).sum()),
        "load": float(loads.sum()),
        "dropped": [
            int(dropped_assignments(counts, expert_capacity(sizes, top_k, E, cf), replicas).sum()) for cf in cfs
        ],
    }


def _add_sums(total: dict | None, part: dict) -> dict:
    if total is None:
        return part
    return {
        "ratio": total["ratio"] + part["ratio"],
        "ratio_max": max(total["ratio_max"], part["ratio_max"]),
        "max_load": total["max_load"] + part["max_load"],
        "load": total["load"] + part["load"],
        "dropped": [a + b for a, b in zip(total["dropped"], part["dropped"])],
    }


def _metrics(sums: dict, batches: int, tokens: int, devices: int, top_k: int, cfs) -> dict:
    """Metrics of one layer and placement over all batches: {cf: {...}}."""
    return {
        str(cf): {
            "dropped": float(dropped) / float(tokens * top_k),
            "imbalance_max_mean": sums["ratio"] / batches,
            "imbalance_max_mean_worst": sums["ratio_max"],
            "max_device_assignments": sums["max_load"] / batches,
            "mean_device_assignments": sums["load"] / (batches * devices),
            "dropped_assignments": int(dropped),
        }
        for cf, dropped in zip(cfs, sums["dropped"])
    }


def _placements(config: BalanceConfig, loads: np.ndarray, num_experts: int, redundant: int) -> list:
    """Per placement and layer index, the (E, D) replica counts; `loads` (layers, E)."""
    out = []
    for name in config.placements:
        if name is Placement.ROUND_ROBIN:
            out.append([round_robin_placement(num_experts, config.devices)] * len(loads))
        else:
            out.append([balanced_placement(layer_loads, config.devices, redundant) for layer_loads in loads])
    return out


def simulate_balance(
    trace: Trace | str | Path,
    config: BalanceConfig | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    **overrides,
) -> dict:
    """Expert-parallel load of `trace` per placement and capacity factor; keyword overrides set
    BalanceConfig fields, e.g. `simulate_balance(trace, devices=8, batch_tokens=4096, cfs=(1.0,))`.

    Returns `balance` {placement: {cf: {dropped, imbalance_max_mean}}} (dropped: share of all
    assignments, all layers; imbalance: mean over layers and batches of max/mean device load),
    `balance_detail` {placement: {layer: {cf: metrics}}}, `balance_shuffled` (as `balance`, tokens
    in a seeded random order), with `decode_batch` B `balance_decode` and `balance_decode_detail`
    (B sequences decoding together, one token of each per step; `batches.DecodeBatches`) and
    `balance_meta`. Per-batch counts are held for groups of about
    `memory_bytes` (one pass over the trace per group; one group unless the trace is very long).
    With `json_path` the result is also written there (the path is checked before the pass).
    """
    check_output(json_path)
    config = build_config(BalanceConfig, config, overrides)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    compare_shuffled, seed, memory_bytes, rows = config.compare_shuffled, config.seed, config.memory_bytes, config.rows
    T, L, E, k, B = trace.num_tokens, len(trace.layers), trace.num_ids, trace.top_k, config.batch_tokens
    if T == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace a non-empty corpus.")
    redundant = config.devices if config.redundant_experts is None else config.redundant_experts
    nb = -(-T // B)
    sizes = np.full(nb, B, np.int64)
    sizes[-1] = T - (nb - 1) * B
    orders = 2 if compare_shuffled else 1
    group = max(1, memory_bytes // (orders * L * E * 4))  # batches whose counts are held at once
    loads = np.zeros((L, E), np.int64)
    per_placement: list | None = None
    sums: dict = {}  # (order, placement index, layer index) -> running sums
    for lo in range(0, nb, group):  # one pass over the trace per group of batches
        hi = min(nb, lo + group)
        labels = ShuffledBatches(T, B, seed) if compare_shuffled else None
        real, shuf = stream_counts(trace, B, lo, hi, labels, loads if lo == 0 else None, rows)
        if per_placement is None:  # the trace's own loads are known after the first pass
            per_placement = _placements(config, loads, E, redundant)
        _accumulate(sums, "real", real, sizes[lo:hi], per_placement, k, config.cfs)
        _accumulate(sums, "shuffled", shuf, sizes[lo:hi], per_placement, k, config.cfs)
    decode = DecodeBatches(document_lengths(trace, rows), config.decode_batch) if config.decode_batch else None
    if decode is not None:  # B sequences at a time, one token each per step: one pass per group of steps
        for lo in range(0, decode.steps, max(1, memory_bytes // (L * E * 4))):
            hi = min(decode.steps, lo + max(1, memory_bytes // (L * E * 4)))
            decode.rewind()
            _, counts = stream_counts(trace, B, lo, hi, decode, None, rows, consecutive=False)
            _accumulate(sums, "decode", counts, decode.sizes[lo:hi], per_placement, k, config.cfs)
    out: dict = {}
    replicas_meta: dict = {}
    layers = [str(layer) for layer in trace.layers]
    for p, name in enumerate(config.placements):
        if name is Placement.BALANCED:
            replicas_meta = {layer: per_placement[p][li].sum(axis=1).tolist() for li, layer in enumerate(layers)}
        for order, key, batches in (
            ("real", "balance", nb),
            ("shuffled", "balance_shuffled", nb),
            ("decode", "balance_decode", decode.steps if decode else 0),
        ):
            if (order, p, 0) not in sums:
                continue
            detail = {
                layer: _metrics(sums[order, p, li], batches, T, config.devices, k, config.cfs)
                for li, layer in enumerate(layers)
            }
            if order != "shuffled":
                out.setdefault(f"{key}_detail", {})[name.value] = detail
            out.setdefault(key, {})[name.value] = _pool(detail, config.cfs)
    out = {
        key: out[key]
        for key in ("balance", "balance_detail", "balance_shuffled", "balance_decode", "balance_decode_detail")
        if key in out
    }
    out["balance_meta"] = {
        "devices": config.devices,
        "batch_tokens": config.batch_tokens,
        "batches": int(nb),
        "tokens": int(T),
        "num_experts": trace.num_experts,  # routed experts
        "num_ids": E,  # the ids placed on devices, zero-computation ones included
        "top_k": k,
        "redundant_experts": redundant,
        "capacity_per_expert": {str(cf): int(expert_capacity([config.batch_tokens], k, E, cf)[0]) for cf in config.cfs},
        # Capacity slots of a full batch per placement: E x capacity whatever the replicas (equal slots).
        "slots": {
            name.value: {str(cf): _slots(per_placement[p][0], expert_capacity([B], k, E, cf)[0]) for cf in config.cfs}
            for p, name in enumerate(config.placements)
        },
        "expert_slots": {name.value: int(per_placement[p][0].sum()) for p, name in enumerate(config.placements)},
        "balanced_replicas": replicas_meta,
        "shuffle_seed": seed if compare_shuffled else None,
        "decode_batch": config.decode_batch,
        "decode_steps": decode.steps if decode else None,
    }
    return write_output(out, json_path)


def _accumulate(
    sums: dict, order: str, counts: np.ndarray | None, sizes: np.ndarray, per_placement: list, top_k: int, cfs
) -> None:
    """Add one group of batches (layers, batches, E) of `order` into the running sums per placement and layer."""
    if counts is None:
        return
    for p, by_layer in enumerate(per_placement):
        for li in range(len(counts)):
            part = _batch_sums(counts[li], sizes, by_layer[li], top_k, cfs)
            sums[order, p, li] = _add_sums(sums.get((order, p, li)), part)


def _slots(placement: np.ndarray, capacity: int) -> int:
    """Capacity slots of one batch summed over every replica of `placement` (E, D)."""
    replicas = placement.sum(axis=1)
    return int(sum(split_evenly(np.int64(capacity), replicas, j).sum() for j in range(int(replicas.max()))))


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
