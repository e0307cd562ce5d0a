"""Positional locality of routing (Mixtral Table 5, Fig. 10): how often tokens at distance d in
a document keep their first expert (`first`) or share an expert of their top-k sets (`any`).

Three streaming accumulators:
- `PairCounter`: pairs (i, i+d) for d = 1..max_distance, anchored on every `stride`-th row
  (stride 1 and max_distance 1 give the exact Table 5 numbers). The last max_distance rows of a
  chunk are carried, so pairs across chunk boundaries count.
- `PermutedCounter`: the same statistics after shuffling positions within each document — what
  an unbalanced expert load gives without any locality. Whole documents are needed, so the
  (incomplete) last document of a chunk is held until the next chunk completes it.
- `random_baseline`: the exact values for independent uniform routing.
"""

from __future__ import annotations

from math import comb

import numpy as np

from routelens.analysis.pairs import count_by_domain, pair_valid, runs, sets_overlap


def random_baseline(num_experts: int, top_k: int) -> dict[str, float]:
    """Locality of independent uniform top-k routing: first = 1/E, any = 1 - C(E-k, k)/C(E, k)."""
    E, k = num_experts, top_k
    return {"first": 1.0 / E, "any": 1.0 - comb(E - k, k) / comb(E, k)}


class PairCounter:
    """Counts, per domain and layer, pairs at distance d = 1..max_distance with equal first
    experts and with overlapping top-k sets.

    update() takes a chunk in layer-major form (`pairs.layer_major`): first-choice ids (L, n),
    top-k masks (W, L, n), then doc ids, positions and domain codes (n,), in trace order.
    """

    def __init__(self, num_domains: int, num_layers: int, *, max_distance: int = 1, stride: int = 1):
        assert max_distance >= 1 and stride >= 1
        self.D, self.L, self.dmax, self.stride = num_domains, num_layers, max_distance, stride
        self.first = np.zeros((num_domains, num_layers, max_distance), dtype=np.int64)
        self.any = np.zeros((num_domains, num_layers, max_distance), dtype=np.int64)
        self.pairs = np.zeros((num_domains, max_distance), dtype=np.int64)
        self._tail: tuple[np.ndarray, ...] | None = None  # last max_distance tokens seen
        self._rows = 0  # tokens seen before the current chunk

    def update(self, first: np.ndarray, mask: np.ndarray, doc: np.ndarray, pos: np.ndarray, dom: np.ndarray) -> None:
        n = len(doc)
        if n == 0:
            return
        cur = (first, mask, doc, pos, dom)
        if self._tail is None:
            ext, T = cur, 0
        else:  # tokens on the last axis of every array
            ext = tuple(np.concatenate([t, c], axis=-1) for t, c in zip(self._tail, cur))
            T = len(self._tail[2])
        f, m, dc, ps, dm = ext
        g0 = self._rows - T  # global index of the first token of ext
        s = self.stride
        for d in range(1, self.dmax + 1):
            a_min = max(0, T - d)  # anchors whose partner lies in the current chunk
            a_end = len(dc) - d
            if a_end <= a_min:
                continue
            a0 = a_min + (-(g0 + a_min)) % s  # first anchor on the stride grid
            if a0 >= a_end:
                continue
            sa, sb = slice(a0, a_end, s), slice(a0 + d, a_end + d, s)
            valid = pair_valid(dc[sa], ps[sa], dc[sb], ps[sb], d)
            hit_first, n_pairs = count_by_domain(f[:, sa] == f[:, sb], valid, dm[sa], self.D)
            hit_any, _ = count_by_domain(sets_overlap(m[..., sa], m[..., sb]), valid, dm[sa], self.D)
            self.first[:, :, d - 1] += hit_first
            self.any[:, :, d - 1] += hit_any
            self.pairs[:, d - 1] += n_pairs
        self._tail = tuple(a[..., -self.dmax :].copy() for a in ext)
        self._rows += n

    def shares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first, any) shares (D + 1, L, dmax) with the pooled domains last (NaN without pairs),
        and pairs (D + 1, dmax)."""
        first = np.concatenate([self.first, self.first.sum(0, keepdims=True)])
        any_ = np.concatenate([self.any, self.any.sum(0, keepdims=True)])
        pairs = np.concatenate([self.pairs, self.pairs.sum(0, keepdims=True)])
        with np.errstate(divide="ignore", invalid="ignore"):
            return first / pairs[:, None, :], any_ / pairs[:, None, :], pairs


class PermutedCounter:
    """Locality after a seeded random permutation of the rows of each document."""

    def __init__(self, num_domains: int, num_layers: int, *, seed: int = 0):
        self.counter = PairCounter(num_domains, num_layers)
        self.rng = np.random.default_rng(seed)
        self._held: tuple[np.ndarray, ...] | None = None  # rows of the document still open

    def update(self, first: np.ndarray, mask: np.ndarray, doc: np.ndarray, dom: np.ndarray) -> None:
        """first (L, n), mask (W, L, n), doc and dom (n,)."""
        cur = (first, mask, doc, dom)
        if self._held is not None:
            cur = tuple(np.concatenate([h, c], axis=-1) for h, c in zip(self._held, cur))
        if len(cur[2]) == 0:
            return
        cut = _last_doc_start(cur[2])
        self._held = tuple(a[..., cut:].copy() for a in cur)
        if cut > 0:
            self._feed(tuple(a[..., :cut] for a in cur))

    def finish(self) -> None:
        if self._held is not None and len(self._held[2]):
            self._feed(self._held)
        self._held = None

    def _feed(self, rows: tuple[np.ndarray, ...]) -> None:
        first, mask, doc, dom = rows
        starts, _ = runs(doc)
        doc_number = np.zeros(len(doc), dtype=np.int64)
        doc_number[starts[1:]] = 1
        doc_number = np.cumsum(doc_number)
        # Documents stay in order; tokens within each are shuffled (random key within the doc).
        perm = np.argsort(doc_number + self.rng.random(len(doc)), kind="stable")
        position = np.arange(len(doc), dtype=np.int64)  # consecutive tokens of a doc are pairs now
        self.counter.update(first[:, perm], mask[..., perm], doc[perm], position, dom[perm])


def _last_doc_start(doc: np.ndarray) -> int:
    """Row where the last document of `doc` begins."""
    change = np.flatnonzero(doc[1:] != doc[:-1])
    return int(change[-1]) + 1 if len(change) else 0
