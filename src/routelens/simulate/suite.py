"""Both simulators in one call, with the shuffled-order controls, as `routelens simulate all` runs them."""

from __future__ import annotations

from pathlib import Path

from routelens.simulate.balance import simulate_balance
from routelens.simulate.cache import ALL_POLICIES, simulate_cache
from routelens.store import Trace, open_trace


def cache_with_control(trace: Trace, *, seed: int = 0, **cache_kwargs) -> dict:
    """`simulate_cache` in trace order, plus `cache_shuffled` {policy: {layer: {capacity: hit_rate}}}
    from the same tokens in a seeded random order: the difference is what locality buys."""
    out = simulate_cache(trace, seed=seed, **cache_kwargs)
    control = simulate_cache(trace, shuffle=True, seed=seed, **{**cache_kwargs, "progress": False})
    out["cache_shuffled"] = control["cache"]
    return out


def simulate_all(
    trace: Trace | str | Path,
    *,
    policies=ALL_POLICIES,
    capacities=None,
    reset_per_document: bool = False,
    expert_bytes: int | None = None,
    dtype_bytes: float = 2.0,
    devices: int = 8,
    batch_tokens: int = 4096,
    cfs=(1.0, 1.25, 2.0),
    placements=("round_robin", "balanced"),
    redundant_experts: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Cache and balance results in one dict: keys `cache*` and `balance*`."""
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    out = cache_with_control(
        trace, policies=policies, capacities=capacities, reset_per_document=reset_per_document,
        expert_bytes=expert_bytes, dtype_bytes=dtype_bytes, seed=seed, progress=progress,
    )  # fmt: skip
    out.update(simulate_balance(trace, devices, batch_tokens, cfs, placements, redundant_experts=redundant_experts, seed=seed))
    return out
