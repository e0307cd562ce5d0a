"""Vocabulary specialization (OLMoE): does a token id keep its expert wherever it occurs?

For each layer, token id t and expert e we count N(t, e) = occurrences of t whose top-k
contains e, and N(t) = occurrences of t. Specialization of t is max_e N(t, e) / N(t); the layer
value is its mean over token ids with N(t) >= min_count. "Input" counts the token itself;
"next" counts, at position i, the token at i + 1 (the token the model is predicting).

Counts are dense (vocabulary x layers x experts) when that fits in `DENSE_LIMIT` entries, and
otherwise kept sparse (sorted unique keys with counts), which suits E = 256 with a large
vocabulary; both give the same triplets (layer, token, expert, count).
"""

from __future__ import annotations

import numba
import numpy as np

from routelens.analysis.pairs import choices_last
from routelens.analysis.row_kernels import count_token_experts


@numba.njit(cache=True, nogil=True)
def _add_token_experts(counts, token_id, et, E):
    """counts (L, V * E) += 1 at [layer, token * E + expert] for every row with token >= 0 and
    expert in its top-k; one layer at a time, so that layer's counts stay in cache."""
    k, L, n = et.shape
    for layer in range(L):
        row = counts[layer]
        for s in range(k):
            e = et[s, layer]
            for i in range(n):
                t = token_id[i]
                if t >= 0:
                    row[t * E + e[i]] += 1


DENSE_LIMIT = 1 << 26  # entries of int32 (256 MB)
TOP_TOKENS = 10


class TokenExpertCounter:
    """N(t, e) per layer, dense or sparse, and N(t)."""

    def __init__(self, num_layers: int, num_experts: int, vocab_size: int, *, dense: bool | None = None):
        self.L, self.E = num_layers, num_experts
        self.V = max(1, vocab_size)
        self.dense = num_layers * self.V * num_experts <= DENSE_LIMIT if dense is None else dense
        self.occurrences = np.zeros(self.V, dtype=np.int64)
        # dense: (L, V * E), cell [layer, token * E + expert]
        self._counts = np.zeros((self.L, self.V * self.E), dtype=np.int32) if self.dense else None
        # sparse: sorted unique keys (token * L + layer) * E + expert, with counts
        self._sparse: list[tuple[np.ndarray, np.ndarray]] = []
        self._sparse_size = 0
        self._sparse_layer: np.ndarray | None = None  # layer of each merged key (see layer_cells)

    def update(self, token_id: np.ndarray, experts: np.ndarray | None = None, *, et: np.ndarray | None = None) -> None:
        """token_id (n,), experts (n, L, k) or `et` = the same as (k, L, n): every (token, layer,
        expert in top-k) counts once."""
        if len(token_id) == 0:
            return
        et = choices_last(experts) if et is None else et  # (k, L, n)
        if self.dense and et.shape[2] == len(token_id):  # the compiled path (`add_rows`)
            self.add_rows(token_id, et)
            return
        top = int(token_id.max())
        if top >= self.V:
            self._grow(top + 1)
        self.occurrences += np.bincount(token_id, minlength=self.V)
        if self.dense and self._counts.dtype == np.int32 and self.occurrences.max() > np.iinfo(np.int32).max:
            self._counts = self._counts.astype(np.int64)  # N(t, e) <= N(t): widen before a count can wrap
        if self.dense:
            # One layer at a time: the bincount's output (V * E cells) stays in cache, which
            # makes it several times faster than one bincount over all layers.
            token_e = token_id.astype(np.intp) * self.E
            size = (top + 1) * self.E
            key = np.empty(et.shape[::2], dtype=np.intp)  # (k, n)
            for layer in range(self.L):
                np.add(token_e[None], et[:, layer], out=key)
                counts = np.bincount(key.ravel(), minlength=size)
                np.add(self._counts[layer, :size], counts, out=self._counts[layer, :size], casting="unsafe")
        else:
            base = (np.arange(self.L, dtype=np.int64) * self.E)[:, None] + (
                token_id.astype(np.int64) * (self.L * self.E)
            )[None, :]
            keys, counts = np.unique((base[None] + et).ravel(), return_counts=True)
            self._sparse.append((keys, counts))
            self._sparse_size += len(keys)
            self._sparse_layer = None
            if self._sparse_size > 4 * len(keys) + (1 << 22):
                self._sparse = [self._merged()]
                self._sparse_size = len(self._sparse[0][0])

    def add_rows(self, token_id: np.ndarray, et: np.ndarray) -> None:
        """As update(token_id, et=et), and a row whose token_id is negative is left out (so the
        next-token counts take the chunk's rows as they are, no (k, L, n) copy of the kept ones).
        Dense counts in one compiled pass per layer; sparse ones through update()."""
        keep = token_id >= 0
        if not self.dense:
            if keep.all():
                self.update(token_id, et=et)
            elif keep.any():
                self.update(token_id[keep], et=et[:, :, keep])
            return
        if not keep.any():
            return
        top = int(token_id.max())
        if top >= self.V:
            self._grow(top + 1)
            if not self.dense:
                return self.add_rows(token_id, et)
        self.occurrences += np.bincount(token_id[keep], minlength=self.V)
        if self._counts.dtype == np.int32 and self.occurrences.max() > np.iinfo(np.int32).max:
            self._counts = self._counts.astype(np.int64)  # N(t, e) <= N(t): widen before a count can wrap
        self._add_compiled(token_id, et)

    def _add_compiled(self, token_id: np.ndarray, et: np.ndarray) -> None:
        """Dense counts only, occurrences already added."""
        _add_token_experts(self._counts, token_id, et, self.E)

    def _grow(self, V: int) -> None:
        V = max(V, 2 * self.V)
        self.occurrences = np.concatenate([self.occurrences, np.zeros(V - self.V, dtype=np.int64)])
        if self.dense and self.L * V * self.E <= DENSE_LIMIT:
            grown = np.zeros((self.L, V * self.E), dtype=self._counts.dtype)
            grown[:, : self._counts.shape[1]] = self._counts
            self._counts = grown
        elif self.dense:  # too large now: continue sparse
            layer, token, expert, counts = self._dense_triplets()
            self._sparse = [self._sorted((token * self.L + layer) * self.E + expert, counts)]
            self._sparse_size = len(counts)
            self.dense, self._counts = False, None
        self.V = V  # sparse keys do not depend on V: token is the outermost index

    @staticmethod
    def _sorted(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys)
        return keys[order], counts[order]

    def _dense_triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        layer, cell = np.nonzero(self._counts)
        token, expert = np.divmod(cell, self.E)
        return layer, token, expert, self._counts[layer, cell].astype(np.int64)

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._sparse:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys = np.concatenate([k for k, _ in self._sparse])
        counts = np.concatenate([c for _, c in self._sparse])
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)

    def layer_counts(self, layer: int) -> np.ndarray:
        """Dense counters only: (V * E,) counts of one layer, cell token * E + expert."""
        assert self.dense, "layer_counts needs dense counts"
        return self._counts[layer]

    def layer_cells(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero counts of one layer as (token, expert, count) arrays, sorted by token then expert."""
        if self.dense:
            cell = np.flatnonzero(self._counts[layer])
            token, expert = np.divmod(cell, self.E)
            return token, expert, self._counts[layer, cell].astype(np.int64)
        if len(self._sparse) != 1 or self._sparse_layer is None:  # merge once, index layers once
            self._sparse = [self._merged()]
            self._sparse_size = len(self._sparse[0][0])
            self._sparse_layer = ((self._sparse[0][0] // self.E) % self.L).astype(np.int32)
        keys, counts = self._sparse[0]
        sel = np.flatnonzero(self._sparse_layer == layer)
        token, expert = np.divmod(keys[sel], self.L * self.E)
        return token, expert % self.E, counts[sel]

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero counts as (layer, token, expert, count) arrays, sorted by layer then token."""
        if self.dense:
            return self._dense_triplets()
        keys, counts = self._merged()
        tl, expert = np.divmod(keys, self.E)
        token, layer = np.divmod(tl, self.L)
        order = np.lexsort((expert, token, layer))
        return layer[order], token[order], expert[order], counts[order]


def add_rows_together(counters: list[TokenExpertCounter], token_ids: list[np.ndarray], experts: np.ndarray) -> None:
    """counters[j].add_rows(token_ids[j], experts as (k, L, n)) for three counters over the same rows
    (analyze's input, shuffled and next-token tables), in one compiled pass over the reader's
    (n, L, k) ids with the layers in parallel when all three are dense; negative ids are left out."""
    if len(experts) == 0:
        return
    for counter, token in zip(counters, token_ids):
        top = int(token.max())
        if top >= counter.V:
            counter._grow(top + 1)
    if len(counters) != 3 or not all(c.dense for c in counters):
        et = choices_last(experts)
        for counter, token in zip(counters, token_ids):
            counter.add_rows(token, et)
        return
    for counter, token in zip(counters, token_ids):
        keep = token[token >= 0]
        counter.occurrences += np.bincount(keep, minlength=counter.V)
        if counter._counts.dtype == np.int32 and counter.occurrences.max() > np.iinfo(np.int32).max:
            counter._counts = counter._counts.astype(np.int64)  # N(t, e) <= N(t): widen before a count can wrap
    a, b, c = counters
    if not (a._counts.dtype == b._counts.dtype == c._counts.dtype and a.E == b.E == c.E):
        et = choices_last(experts)
        for counter, token in zip(counters, token_ids):
            counter._add_compiled(token, et)
        return
    count_token_experts(
        np.ascontiguousarray(experts), *(t.astype(np.int64) for t in token_ids), a._counts, b._counts, c._counts, a.E
    )


def specialization(counter: TokenExpertCounter, min_count: int) -> np.ndarray:
    """(L,) mean over token ids with N(t) >= min_count of max_e N(t, e) / N(t); NaN if none.
    One layer at a time, so the temporaries are a layer's counts, not all of them."""
    keep = counter.occurrences >= max(min_count, 1)
    if not keep.any():
        return np.full(counter.L, np.nan)
    occ = counter.occurrences[keep]
    shares = np.empty((counter.L, len(occ)), order="F")  # (L, kept ids), laid out (and so summed) as before
    for layer in range(counter.L):
        if counter.dense:
            best = counter.layer_counts(layer).reshape(counter.V, counter.E).max(axis=1)
        else:
            token, _, count = counter.layer_cells(layer)
            best = np.zeros(counter.V, dtype=np.int64)
            np.maximum.at(best, token, count)
        shares[layer] = best[keep] / occ
    return shares.mean(axis=1)


def typical_tokens(
    counter: TokenExpertCounter, min_count: int, top: int = TOP_TOKENS
) -> list[list[list[tuple[int, float, int]]]]:
    """Per layer and expert, the `top` token ids with the highest N(t, e) / N(t) (ties: higher
    count first) among ids with N(t) >= min_count: [layer][expert] -> [(token, share, count)]."""
    out: list[list[list[tuple[int, float, int]]]] = []
    for layer in range(counter.L):  # one layer's cells at a time
        token, expert, count = counter.layer_cells(layer)
        occ = counter.occurrences[token]
        keep = occ >= max(min_count, 1)
        token, expert, count, occ = token[keep], expert[keep], count[keep], occ[keep]
        share = count / occ
        order = np.lexsort((token, -count, -share, expert))  # group by expert, best first
        token, expert, count, share = token[order], expert[order], count[order], share[order]
        starts = np.searchsorted(expert, np.arange(counter.E))
        rank = np.arange(len(expert)) - starts[expert] if len(expert) else np.zeros(0, dtype=np.int64)
        rows: list[list[tuple[int, float, int]]] = [[] for _ in range(counter.E)]
        for i in np.flatnonzero(rank < top):  # at most E * top rows
            rows[int(expert[i])].append((int(token[i]), float(share[i]), int(count[i])))
        out.append(rows)
    return out
