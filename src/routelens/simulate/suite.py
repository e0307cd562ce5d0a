"""Both simulators in one call, with the shuffled-order controls, as `routelens simulate all` runs them."""

from __future__ import annotations

import os
from pathlib import Path

from routelens.config import build_config, split_overrides
from routelens.simulate.balance import BalanceConfig, simulate_balance
from routelens.simulate.cache import CacheConfig, simulate_cache
from routelens.simulate.output import check_output, write_output
from routelens.store import Trace, open_trace


def cache_with_control(
    trace: Trace | str | Path,
    config: CacheConfig | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    **overrides,
) -> dict:
    """`simulate_cache` in trace order, plus `cache_shuffled` {policy: {layer: {capacity: hit_rate}}}
    from the same tokens in a seeded random order: the difference is what locality buys. With
    `json_path` the result is also written there (the path is checked before the replays)."""
    check_output(json_path)
    config = build_config(CacheConfig, config, overrides)
    out = simulate_cache(trace, config)
    control = simulate_cache(trace, config, shuffle=True, progress=False)
    out["cache_shuffled"] = control["cache"]
    return write_output(out, json_path)


def simulate_all(
    trace: Trace | str | Path,
    cache: CacheConfig | None = None,
    balance: BalanceConfig | None = None,
    *,
    json_path: str | os.PathLike | None = None,
    **overrides,
) -> dict:
    """Cache and balance results in one dict: keys `cache*` and `balance*`. Keyword overrides set
    the fields of CacheConfig and BalanceConfig (one both have, such as `seed`, sets both). With
    `json_path` the result is also written there (the path is checked before the simulators run)."""
    check_output(json_path)
    cache_overrides, balance_overrides = split_overrides(overrides, CacheConfig, BalanceConfig, what="simulate_all")
    cache = build_config(CacheConfig, cache, cache_overrides)
    balance = build_config(BalanceConfig, balance, balance_overrides)
    trace = trace if isinstance(trace, Trace) else open_trace(trace)
    out = cache_with_control(trace, cache)
    out.update(simulate_balance(trace, balance))
    return write_output(out, json_path)
