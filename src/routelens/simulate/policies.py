"""The choices a simulation is run with: cache policies and expert placements.

Kept apart from the kernels so that the CLI and the report can name the choices without
importing (and compiling) numba code.
"""

from __future__ import annotations

from enum import StrEnum


class Policy(StrEnum):
    """Expert-cache replacement policies (docs/simulate.md defines each precisely)."""

    LRU = "lru"  # evict the least recently requested expert
    LFU = "lfu"  # evict the least often requested expert (ties: least recent)
    BELADY = "belady"  # evict the expert whose next request is farthest: the optimal demand-paging policy (offline)
    PREFETCH = "prefetch"  # LRU, plus loading ahead of time what followed the previous token's first choice
    PIN = "pin"  # the N most used experts of the layer always resident (--pin N), LRU over the other slots
    LOOKAHEAD = "lookahead"  # LRU, plus loading the experts an earlier layer's router predicted (trace --lookahead)


class Placement(StrEnum):
    """How experts are laid out over expert-parallel devices."""

    ROUND_ROBIN = "round_robin"  # expert e on device e mod D, one replica each
    BALANCED = "balanced"  # EPLB-like: hot experts replicated into spare slots, packed by load


POLICY_CODE = {Policy.LRU: 0, Policy.LFU: 1, Policy.BELADY: 2, Policy.PREFETCH: 3, Policy.PIN: 4, Policy.LOOKAHEAD: 5}
DEMAND_PAGING = (
    Policy.LRU,
    Policy.LFU,
    Policy.BELADY,
    Policy.PIN,
)  # load only what is requested: Belady bounds their hits
