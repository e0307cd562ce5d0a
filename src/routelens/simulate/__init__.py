"""Systems simulators over routing traces: expert caching (offloading) and expert-parallel load.

    from routelens.simulate import simulate_cache, simulate_balance
    simulate_cache("trace/", policies=("lru", "belady"))["cache"]["lru"]["3"]["2"]   # layer 3, 2 experts cached
    simulate_balance("trace/", devices=8, batch_tokens=4096)["balance"]["round_robin"]["1.25"]["dropped"]
    simulate_distinct("trace/", batch=16)["distinct"]["3"]["mean"]   # experts one batch touches at layer 3

Array-level kernels (no trace needed): `cache_kernels.replay`, `balance.batch_counts`,
`balance.dropped_assignments`, `balance.device_loads`; `reference.replay_reference` is the
plain-Python specification of the cache policies. docs/simulate.md defines every rule.
"""

from routelens.simulate.balance import BalanceConfig, simulate_balance
from routelens.simulate.cache import CacheConfig, cache_metrics, simulate_cache
from routelens.simulate.distinct import DistinctConfig, simulate_distinct
from routelens.simulate.policies import Placement, Policy
from routelens.simulate.suite import cache_with_control, simulate_all

__all__ = [
    "BalanceConfig",
    "CacheConfig",
    "DistinctConfig",
    "Placement",
    "Policy",
    "cache_metrics",
    "cache_with_control",
    "simulate_all",
    "simulate_balance",
    "simulate_cache",
    "simulate_distinct",
]
