"""Expert-cache simulation over a trace: hit rates, misses and bytes moved per cache size and layer.

Models expert offloading: each MoE layer keeps `capacity` of its E experts in fast memory (the
GPU), the others in slow memory (CPU RAM, disk), and a token whose expert is not resident waits
for it to be loaded. Replaying the trace in order, as a decoder meets its tokens, gives for
every policy, layer and capacity the share of expert requests served from the cache; comparing
with a shuffled replay of the same tokens shows what routing locality buys. The arithmetic is
in `cache_kernels.replay`; this module feeds it a trace and turns counters into metrics.

Memory does not grow with the trace: the layer streams are first spilled to a temporary folder
(`spill.spill_layers`: the expert ids, uncompressed, under $TMPDIR or `tmp_dir`), then each
layer is replayed from disk in blocks of about `memory_bytes`, the cache states carried from
block to block (`CacheState`); Belady's next-use indices are a backward pass over the layer's
file (`spill.next_use_file`). LRU at several capacities is one pass for all of them
(`curve.lru_curve`: LRU is a stack policy), the budgets' hit curves included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routelens.atomic import temp_dir
from routelens.config import build_config, setting
from routelens.errors import RoutelensError
from routelens.simulate.budget import budget_report
from routelens.simulate.cache_kernels import (
    COLD_MISSES,
    HITS,
    MISSES,
    NUM_COUNTERS,
    PREFETCH_LOADS,
    PREFETCH_USEFUL,
    CacheState,
    max_pinned,
    replay,
)
from routelens.simulate.curve import CurveState, lru_curve
from routelens.simulate.output import check_output, write_output
from routelens.simulate.policies import Policy
from routelens.simulate.spill import MIN_ROWS, next_use_file, read_next_use_raw, spill_layers
from routelens.store import Trace, open_trace

ALL_POLICIES = (Policy.LRU, Policy.LFU, Policy.BELADY, Policy.PREFETCH)
DEFAULT_MEMORY = 256 << 20  # bytes of one block of a layer stream replayed at a time, with its next-use indices


@dataclass
class CacheConfig:
    policies: tuple[Policy, ...] = setting(ALL_POLICIES, "Cache policy, repeatable.")
    capacities: tuple[int, ...] | None = setting(
        None, "Experts cached per layer, repeatable.", shown_default="1..E"
    )  # None: every size 1..E
    reset_per_document: bool = setting(False, "Empty the cache (and policy memory) at every document start.")
    shuffle: bool = False  # replay tokens in a seeded random order instead of trace order
    seed: int = setting(0, "Seed of the shuffled-order control.")
    expert_bytes: int | None = setting(
        None, "Bytes of one expert.", shown_default="manifest expert_params x --dtype-bytes"
    )  # None: from the manifest's expert_params
    dtype_bytes: float = setting(2.0, "Bytes per expert parameter, e.g. 2 for bf16, 0.5 for 4-bit.")
    memory_bytes: int = DEFAULT_MEMORY  # one block of a layer stream replayed at a time, with its next-use indices
    progress: bool = False
    tmp_dir: str | Path | None = None  # where the layer streams are spilled; None: $TMPDIR
    pin: int | None = setting(
        None,
        "Pin the N most used experts of each layer (LRU over the other slots); adds the `pin` policy.",
        shown_default="none",
    )
    lookahead_distance: int = setting(
        1, "Layers ahead the `lookahead` policy's predictions come from (1..D of trace --lookahead D)."
    )
    bandwidth_gbps: float | None = setting(
        None, "Bandwidth of expert loads in GB/s (1e9 bytes): expected load time per token.", shown_default="none"
    )
    budget_bytes: tuple[int, ...] = setting(
        (),
        "Total expert memory of all layers, split per layer from each layer's hit curve vs uniformly; repeatable.",
        shown_default="none",
    )

    def __post_init__(self):
        policies = (self.policies,) if isinstance(self.policies, str) else self.policies  # one named alone
        try:
            self.policies = tuple(Policy(p) for p in policies)
        except ValueError as exc:
            choices = ", ".join(p.value for p in Policy)
            raise RoutelensError(f"{exc}; choose policies among {choices}.") from None
        if not self.policies:
            raise RoutelensError(f"no cache policy given; choose among {', '.join(p.value for p in Policy)}.")
        if self.pin is not None:
            if self.pin < 1:
                raise RoutelensError(f"--pin {self.pin} must pin at least 1 expert per layer.")
            if Policy.PIN not in self.policies:
                self.policies += (Policy.PIN,)
        elif Policy.PIN in self.policies:
            raise RoutelensError("the pin policy needs the number of experts to pin; pass --pin N.")
        if self.lookahead_distance < 1:
            raise RoutelensError(f"--lookahead-distance {self.lookahead_distance} must be at least 1 layer.")
        if self.bandwidth_gbps is not None and not self.bandwidth_gbps > 0:
            raise RoutelensError(f"--bandwidth {self.bandwidth_gbps} must be positive GB/s, e.g. 25 for PCIe 4 x16.")
        self.budget_bytes = tuple(
            int(b) for b in ((self.budget_bytes,) if isinstance(self.budget_bytes, int | float) else self.budget_bytes)
        )
        if any(b <= 0 for b in self.budget_bytes):
            raise RoutelensError(f"--budget-bytes {list(self.budget_bytes)} must be positive totals of expert memory.")
        if self.budget_bytes and self.capacities is not None:
            raise RoutelensError(
                "--budget-bytes needs every capacity 1..E (each layer's whole hit curve); leave out --capacity."
            )
        if self.capacities is not None:
            self.capacities = tuple(sorted({int(c) for c in self.capacities}))
            if not self.capacities or self.capacities[0] < 1:
                raise RoutelensError(
                    f"cache capacities {list(self.capacities)} must be >= 1 expert; pass e.g. --capacity 2."
                )
        if self.expert_bytes is not None and self.expert_bytes <= 0:
            raise RoutelensError(f"expert_bytes={self.expert_bytes} must be positive; pass the bytes of one expert.")
        if self.dtype_bytes <= 0:
            raise RoutelensError(f"dtype_bytes={self.dtype_bytes} must be positive, e.g. 2 for bf16 weights.")
        if self.memory_bytes < 1:
            raise RoutelensError(f"memory_bytes={self.memory_bytes} must be positive.")


def expert_size_bytes(trace: Trace, config: CacheConfig) -> int | None:
    """Bytes moved per expert load: the override, else expert_params x dtype_bytes, else unknown."""
    if config.expert_bytes is not None:
        return int(config.expert_bytes)
    params = (trace.manifest.get("model") or {}).get("expert_params")
    return int(round(params * config.dtype_bytes)) if params else None


def cache_metrics(
    counters: np.ndarray, tokens: int, top_k: int, expert_bytes: int | None, bandwidth_gbps: float | None = None
) -> dict:
    """Counters of one replay -> the reported metrics (pure function).

    `hit_rate` counts every request, compulsory (first-ever) misses included; `hit_rate_warm`
    leaves out each expert's first request in its segment, so it is 1.0 at capacity E. With the
    expert size and a bandwidth, `load_seconds_per_token` is the time those loads take.
    """
    requests = tokens * top_k
    warm = requests - int(counters[COLD_MISSES])
    loads = int(counters[MISSES] + counters[PREFETCH_LOADS])
    out = {
        "hit_rate": float(counters[HITS]) / requests,
        "hit_rate_warm": float(counters[HITS]) / warm if warm else 1.0,
        "misses_per_token": float(counters[MISSES]) / tokens,
        "loads_per_token": loads / tokens,
        "bytes_per_token": loads * expert_bytes / tokens if expert_bytes else None,
    }
    if expert_bytes and bandwidth_gbps:
        out["load_seconds_per_token"] = out["bytes_per_token"] / (bandwidth_gbps * 1e9)
    if counters[PREFETCH_LOADS]:
        out["prefetch_loads_per_token"] = float(counters[PREFETCH_LOADS]) / tokens
        out["prefetch_accuracy"] = float(counters[PREFETCH_USEFUL]) / float(counters[PREFETCH_LOADS])
        out["wasted_loads_per_token"] = float(counters[PREFETCH_LOADS] - counters[PREFETCH_USEFUL]) / tokens
    return out


def simulate_cache(
    trace: Trace | str | Path,
    config: CacheConfig | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    **overrides,
) -> dict:
    """Replay every layer of `trace` through an expert cache per policy and capacity; keyword
    overrides set CacheConfig fields, e.g. `simulate_cache(trace, policies=("lru",), capacities=(2,))`.

    Returns `cache` {policy: {layer: {capacity: hit_rate}}}, `cache_loads` (same nesting:
    experts loaded per token, demand misses plus prefetch loads: a hit rate means little without
    what it cost), `cache_detail` (same nesting, a dict of metrics per capacity, see
    `cache_metrics`), `cache_gap` {layer: {capacity: Belady minus LRU hit rate}} when both ran,
    `cache_load_time` {policy: {capacity: seconds of expert loads per token, all layers}} with a
    bandwidth, `cache_budget` {policy: {total bytes: {slots, best, uniform}}} with budgets (see
    `budget.budget_report`), and `cache_meta`. Layers and capacities are string keys; with
    `json_path` the result is also written there (the path is checked before the replay starts).
    The layer streams are spilled under `tmp_dir` (default: the system's temporary folder,
    $TMPDIR): tokens x layers x k bytes; memory holds blocks of about `memory_bytes`.
    """
    check_output(json_path)
    config = build_config(CacheConfig, config, overrides)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    memory_bytes, progress, tmp_dir = config.memory_bytes, config.progress, config.tmp_dir
    E, k, T = trace.num_ids, trace.top_k, trace.num_tokens
    if T == 0:
        raise RoutelensError(f"the trace at {trace.path} holds no tokens; trace a non-empty corpus.")
    caps = config.capacities or tuple(range(1, E + 1))
    if caps[-1] > E:
        raise RoutelensError(f"cache capacity {caps[-1]} exceeds the {E} experts of a layer; pass --capacity 1..{E}.")
    size = expert_size_bytes(trace, config)
    cache: dict = {p.value: {} for p in config.policies}
    loads: dict = {p.value: {} for p in config.policies}
    detail: dict = {p.value: {} for p in config.policies}
    order = "trace" if not config.shuffle else "documents" if config.reset_per_document else "shuffled"
    itemsize = 1 if E <= 256 else 2
    block = max(MIN_ROWS, memory_bytes // (k * (itemsize + 4 + 8 + 8 + 2 * 8) + 2))  # ids, next use, predictions
    belady, ahead = Policy.BELADY in config.policies, Policy.LOOKAHEAD in config.policies
    if config.budget_bytes and size is None:
        raise RoutelensError(
            "--budget-bytes needs the size of one expert: the manifest has no expert_params; pass --expert-bytes."
        )
    pinned_order: dict = {}
    from routelens.progress import progress_bar

    with progress_bar(disable=not progress) as bar, temp_dir(tmp_dir, "cache") as tmp:
        task = bar.add_task("cache", total=len(trace.layers) * len(config.policies) * len(caps), status="")
        bar.update(task, status=f"spilling the layer streams ({order} order)")
        spilled = spill_layers(
            trace,
            Path(tmp),
            order=order,
            seed=config.seed,
            lookahead_distance=config.lookahead_distance if ahead else None,
        )
        for i, true_layer in enumerate(spilled.layers):
            layer = str(true_layer)
            bar.update(task, status=f"layer {layer}")
            nxt_path = (
                next_use_file(spilled, i, reset_per_document=config.reset_per_document, rows=block) if belady else None
            )
            runs = [(p, c) for p in config.policies for c in caps]
            pins = {}
            if (
                config.pin is not None
            ):  # the layer's most used experts (ties: lower id), as many as each capacity allows
                used = sum(np.bincount(x.reshape(-1), minlength=E) for _, x, _ in spilled.blocks(i, block))
                by_use = np.argsort(-used, kind="stable")
                pinned_order[layer] = by_use[: config.pin].tolist()
                pins = {c: by_use[: max(0, min(config.pin, max_pinned(c, k)))] for c in caps}
            # LRU at several capacities: its whole hit curve from one pass (curve.py), the same counters
            by_curve = [policy is Policy.LRU and len(caps) > 1 for policy, _ in runs]
            curve_state, curve = CurveState.empty(E), np.zeros((E, NUM_COUNTERS), np.int64)
            states = [CacheState.empty(E, k) for _ in runs]
            counters = np.zeros((len(runs), NUM_COUNTERS), np.int64)
            for lo, experts, starts in spilled.blocks(i, block):
                segment_start = starts if config.reset_per_document else np.zeros(len(starts), np.bool_)
                segment_start[0] |= lo == 0
                nxt = read_next_use_raw(nxt_path, T, k, lo, len(experts)) if belady else None
                predicted = spilled.rows(len(spilled.layers) + i, lo, len(experts)) if ahead else None
                if any(by_curve):
                    curve += lru_curve(experts, segment_start, curve_state)
                for r, (policy, capacity) in enumerate(runs):
                    if by_curve[r]:
                        continue
                    counters[r] += replay(
                        experts,
                        segment_start,
                        policy,
                        capacity,
                        states[r],
                        nxt if policy is Policy.BELADY else None,
                        pinned=pins.get(capacity),
                        predicted=predicted,
                    )
            spilled.remove(i)
            if nxt_path is not None:
                nxt_path.unlink()
            for r, (policy, capacity) in enumerate(runs):
                if by_curve[r]:
                    counters[r] = curve[capacity - 1]
                metrics = cache_metrics(counters[r], T, k, size, config.bandwidth_gbps)
                cache[policy.value].setdefault(layer, {})[str(capacity)] = metrics["hit_rate"]
                loads[policy.value].setdefault(layer, {})[str(capacity)] = metrics["loads_per_token"]
                detail[policy.value].setdefault(layer, {})[str(capacity)] = metrics
            bar.advance(task, len(runs))
    out = {"cache": cache, "cache_loads": loads, "cache_detail": detail}
    if Policy.LRU in config.policies and Policy.BELADY in config.policies:
        lru, opt = cache[Policy.LRU.value], cache[Policy.BELADY.value]
        out["cache_gap"] = {layer: {c: opt[layer][c] - lru[layer][c] for c in lru[layer]} for layer in lru}
    seconds_per_byte = 1 / (config.bandwidth_gbps * 1e9) if config.bandwidth_gbps else None
    if seconds_per_byte is not None and size:  # the whole model: every layer's loads, per token
        out["cache_load_time"] = {
            p: {str(c): sum(loads[p][layer][str(c)] for layer in loads[p]) * size * seconds_per_byte for c in caps}
            for p in loads
        }
    if config.budget_bytes:
        layers = [str(layer) for layer in trace.layers]
        out["cache_budget"] = {
            p: budget_report(cache[p], loads[p], layers, E, k, size, config.budget_bytes, seconds_per_byte)
            for p in cache
        }
    out["cache_meta"] = {
        "tokens": T,
        "num_experts": trace.num_experts,  # routed experts
        "num_ids": E,  # the ids the cache holds, zero-computation ones included
        "top_k": k,
        "capacities": list(caps),
        "expert_bytes": size,
        "reset_per_document": config.reset_per_document,
        "order": f"shuffled (seed {config.seed})" if config.shuffle else "trace",
        "below_top_k": "capacity < k: a token's requests are served one by one (demand paging); see docs/simulate.md",
        "pin": config.pin,
        "pinned": pinned_order,  # {layer: the experts pin keeps, most used first}; at capacity c, the first max_pinned(c, k)
        "lookahead_distance": config.lookahead_distance if ahead else None,
        "bandwidth_gbps": config.bandwidth_gbps,
    }
    return write_output(out, json_path)
