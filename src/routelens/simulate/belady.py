"""Belady over a stream in memory, its next uses computed block by block as the replay reaches them.

Belady's replay reads, at every access, when its expert comes next: a backward pass. Computed
for the whole stream first (`next_use_distances`), that is 4 bytes per request written to fresh
memory and read back (800 MB at 100M top-2 events), and at that size the pass costs about as
much as the replay, most of it in page faults and memory traffic. Here one backward pass keeps
only the state of the scan at every block boundary (`next_use_checkpoints`: E indices per block);
then each block's distances are computed from its checkpoint into one buffer of `rows` tokens,
which stays in cache, and replayed at once. The same counters as `replay` with the whole stream's
next uses (tested), with memory for one block.
"""

from __future__ import annotations

import numba
import numpy as np

from routelens.simulate.cache_kernels import NUM_COUNTERS, CacheState, _replay_belady
from routelens.simulate.next_use import NEVER, _backward, distance_dtype, next_use_checkpoints

BLOCK_ROWS = 1 << 15  # tokens per block: 256 KiB of distances at k = 2, within a core's L2


def replay_belady(
    experts: np.ndarray, segment_start: np.ndarray, capacity: int, state: CacheState, rows: int = BLOCK_ROWS
) -> np.ndarray:
    """Belady's counters over `experts` (tokens, k) from `state` (updated in place), as
    `replay(experts, segment_start, "belady", capacity, state, next_use_distances(...))`."""
    experts = np.ascontiguousarray(experts)
    segment_start = np.ascontiguousarray(segment_start, dtype=np.bool_)
    assert experts.ndim == 2 and len(segment_start) == len(experts), (experts.shape, segment_start.shape)
    assert capacity >= 1, capacity
    T, k = experts.shape
    E = len(state.cached)
    assert experts.size == 0 or int(experts.max()) < E, "expert id beyond the state's E"
    counters = np.zeros(NUM_COUNTERS, np.int64)
    if T == 0:
        return counters
    checkpoints = next_use_checkpoints(experts, segment_start, rows)
    _blocked(
        experts,
        segment_start,
        checkpoints,
        rows,
        np.empty(min(T, rows) * k, distance_dtype(T * k)),
        np.full(E, NEVER, np.int64),
        capacity,
        np.zeros(E, np.bool_),  # nothing pinned
        np.empty((0, 1), experts.dtype),  # no prediction
        *state.arrays(),
        counters,
    )
    return counters


@numba.njit(cache=True, nogil=True)
def _blocked(x, starts, checkpoints, rows, buffer, last, capacity, pinned, ahead, *state_and_counters):
    """Each block's next uses from its checkpoint into `buffer`, then its replay: no Python per block."""
    T, k = x.shape
    for b in range(checkpoints.shape[0]):
        lo, hi = b * rows, min(T, (b + 1) * rows)
        last[: checkpoints.shape[1]] = checkpoints[b]
        nu = buffer[: (hi - lo) * k]
        _backward(x[lo:hi], starts[lo:hi], last, lo * k, True, nu)
        _replay_belady(x[lo:hi], starts[lo:hi], nu, capacity, pinned, ahead, *state_and_counters)
