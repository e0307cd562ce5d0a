"""Compiled pair counting for `locality.PairCounter`: one pass over a chunk's anchors counting, per
domain, layer and distance, the pairs with equal first experts and with overlapping top-k sets,
the pairs left out at window boundaries, and (d = 1) the counts per resampling unit.

The numpy path it replaces built (L, m) boolean arrays per distance and counted them with a
count_nonzero per domain run and layer (thousands of calls per chunk); here the validity of a
pair is decided once per anchor and distance, and the layers of a token are read as one
contiguous row (token-major, `locality.token_rows`). The rules are those of `PairCounter` (same
document, positions exactly d apart, not straddling a window of `window` tokens when window > 0);
as the other accumulators do, it takes documents to be contiguous runs with increasing
positions, so an anchor's partners are searched only until its document ends or skips a
position. tests/analysis/test_pair_kernels.py checks it against a per-pair Python loop.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def count_pairs_by_anchor(
    first,
    mask,
    words,
    doc,
    pos,
    dom,
    unit,
    anchors,
    partner_from,
    row0,
    stride,
    window,
    hit_first,
    hit_any,
    pairs,
    straddling,
    unit_first,
    unit_any,
    unit_pairs,
    with_units,
):
    """first (N, L) ids and mask (N, L * words) words, TOKEN-MAJOR, doc/pos/dom/unit (N,):
    anchors a < `anchors` on the stride grid ((row0 + a) % stride == 0) paired with b = a + d,
    d = 1..dmax, b < N and b >= partner_from. Adds into hit_first/hit_any (D, dmax, L) (int32
    counts of this call, at most `anchors` each), pairs/straddling (D, dmax) and, with_units,
    unit_first/unit_any (S, L) and unit_pairs (S,) for d = 1.

    Anchor by anchor, the partner a + d's layers are one contiguous row compared with the
    anchor's row in a loop over layers that the compiler vectorises (4-5x a layer-major loop)."""
    N, L = first.shape
    dmax = hit_first.shape[1]
    a0 = (-row0) % stride
    ok = np.zeros(dmax + 1, np.uint8)  # ok[d]: (a, a + d) is a counted pair
    for a in range(a0, anchors, stride):
        g, top, counted = dom[a], 0, 0
        for d in range(1, dmax + 1):
            b = a + d
            ok[d] = 0
            if b >= N or doc[a] != doc[b] or pos[b] - pos[a] > d:
                break  # documents are contiguous and positions increase: no later partner
            if b < partner_from or pos[b] - pos[a] != d:
                continue
            if window > 0 and pos[a] // window != pos[b] // window:
                straddling[g, d - 1] += 1
                continue
            ok[d] = 1
            top = d
            counted += 1
            pairs[g, d - 1] += 1
        if top == 0:
            continue
        fa, ma = first[a], mask[a]
        fast = words == 1 and counted == top  # the usual case, apart so that the compiler vectorises it
        if fast:
            _add_rows(fa, ma, first, mask, a, top, hit_first[g], hit_any[g], L)
        for d in range(1, top + 1):
            if not ok[d] or (fast and not (with_units and d == 1)):
                continue
            fb, mb = first[a + d], mask[a + d]
            if not fast:
                rf, ra = hit_first[g, d - 1], hit_any[g, d - 1]
                for layer in range(L):
                    rf[layer] += fa[layer] == fb[layer]
                    for w in range(layer * words, (layer + 1) * words):
                        if ma[w] & mb[w]:
                            ra[layer] += 1
                            break
            if with_units and d == 1:
                u = unit[a]
                unit_pairs[u] += 1
                uf, ua = unit_first[u], unit_any[u]
                if words == 1:
                    for layer in range(L):
                        uf[layer] += fa[layer] == fb[layer]
                        ua[layer] += (ma[layer] & mb[layer]) != 0
                else:
                    for layer in range(L):
                        uf[layer] += fa[layer] == fb[layer]
                        for w in range(layer * words, (layer + 1) * words):
                            if ma[w] & mb[w]:
                                ua[layer] += 1
                                break


@numba.njit(cache=True, nogil=True)
def _add_rows(fa, ma, first, mask, a, top, rf, ra, L):
    """One-word sets, every d = 1..top counted: rf[d - 1, layer] += first ids equal,
    ra[d - 1, layer] += sets meet."""
    for d in range(1, top + 1):
        fb, mb = first[a + d], mask[a + d]
        f1, a1 = rf[d - 1], ra[d - 1]
        for layer in range(L):
            f1[layer] += fa[layer] == fb[layer]
            a1[layer] += (ma[layer] & mb[layer]) != 0
