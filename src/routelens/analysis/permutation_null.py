"""The within-document permutation null of locality, exactly: what consecutive tokens would share
if the tokens of every document were shuffled, computed in closed form instead of by shuffling.

A uniform random permutation of a document of n tokens puts a uniformly random ordered pair of
distinct tokens (i, j) at every one of its n - 1 consecutive positions. Call i ~ j when the two
tokens "hit" (equal first experts for `first`, overlapping top-k sets for `any`), deg(j) the
number of other tokens of the document that hit j, H = sum_j deg(j) (ordered hitting pairs)
and P2 = sum_j deg(j) (deg(j) - 1) (ordered paths i ~ j ~ l of distinct tokens). The number X of
consecutive hits after the shuffle then has

    E[X]   = (n - 1) H / (n (n - 1)) = H / n
    E[X^2] = H / n + (H^2 - 2 H - 2 P2) / (n (n - 1))

(E[X^2] sums the n - 1 pairs with themselves, the 2 (n - 2) overlapping pairs (i, i+1), (i+1, i+2),
hit with probability P2 / (n (n - 1) (n - 2)), and the (n - 2)(n - 3) ordered disjoint pairs,
hit with probability (H^2 - 2 H - 4 P2) / (n (n - 1) (n - 2) (n - 3)): the ordered pairs of
hitting pairs that share no token). For `first`, with first-choice counts c_e,
H = sum_e c_e (c_e - 1), so E[X] = sum_e c_e (c_e - 1) / n. For `any`, the tokens of a
document are grouped by their top-k set (their bitmask), and deg follows from the overlaps
between the distinct sets present. `document_moments` tests every pair of the m distinct sets
of a document and layer (m <= C(E, k), 28 for top-2 of 8, but up to n for large E, where it
costs n^2); `document_moments_rows`, which analyze uses, lists each distinct set under each expert
it holds and sums the sets meeting it over those lists (O(n log n + sum_e c_e^2), c_e the distinct
sets holding expert e: about k^2 m^2 / E for uniform top-k, 5-8x faster than the pair tests at
top-8 of 256 in benchmarks/bench_analyze.py); tests/analysis/test_row_kernels.py holds the two
kernels, brute-force degrees and 2000 shuffles to each other at top-8 of 256.

Documents are shuffled independently, so the expectations and the variances add over the
documents of a domain (or a resampling unit): `locality_permuted` is exact, and
`locality_permuted_sd` is the exact standard deviation of a single shuffle's share. The
shuffling estimate of earlier releases (`locality.PermutedCounter`) is kept as the reference
(`AnalyzeConfig(locality_null="shuffled")`); tests/analysis/test_permutation_null.py checks the
two against each other and against brute force over every permutation of tiny documents.
"""

from __future__ import annotations

import numba
import numpy as np

from routelens.analysis.locality import UnitPairCounts, _last_doc_start, token_rows
from routelens.analysis.pairs import mask_dtype, runs

DENSE_BITS = 16  # E <= 16: the distinct sets of a document are counted in a 2^E table


@numba.njit(cache=True, nogil=True, inline="always")
def _moments(n: int, H: float, P2: float) -> tuple[float, float]:
    """E[X] and Var[X] of the consecutive hits of one shuffled document (module docstring)."""
    mean = H / n
    second = mean + (H * H - 2.0 * H - 2.0 * P2) / (n * (n - 1.0))
    return mean, max(second - mean * mean, 0.0)


@numba.njit(cache=True, nogil=True)
def document_moments(first, mask, starts, num_ids, dense):
    """first (L, n) ids, mask (W, L, n) top-k bitmask words, starts (docs + 1,) row bounds of whole
    documents -> (4, docs, L) float64: E and Var of the shuffled `first` hits, then of `any`."""
    L, W = first.shape[0], mask.shape[0]
    docs = len(starts) - 1
    out = np.zeros((4, docs, L))
    longest = 1
    for d in range(docs):
        longest = max(longest, starts[d + 1] - starts[d])
    count = np.zeros(num_ids, np.int64)
    table = np.zeros((1 << num_ids) if dense else 1, np.int64)
    keys = np.empty((W, longest), mask.dtype)  # distinct sets of the document, and their counts
    size = np.empty(longest, np.int64)
    for d in range(docs):
        a, b = starts[d], starts[d + 1]
        n = b - a
        if n < 2:
            continue
        for layer in range(L):
            f = first[layer]
            for i in range(a, b):
                count[f[i]] += 1
            H, P2 = 0.0, 0.0
            for i in range(a, b):  # each expert once: its count is cleared when met
                c = count[f[i]]
                if c > 0:
                    H += c * (c - 1.0)
                    P2 += c * (c - 1.0) * (c - 2.0)
                    count[f[i]] = 0
            out[0, d, layer], out[1, d, layer] = _moments(n, H, P2)
            m = 0
            if dense:
                for i in range(a, b):
                    v = mask[0, layer, i]
                    if table[v] == 0:
                        keys[0, m] = v
                        m += 1
                    table[v] += 1
                for s in range(m):
                    size[s] = table[keys[0, s]]
                    table[keys[0, s]] = 0
            else:
                for i in range(a, b):
                    found = -1
                    for s in range(m):
                        same = True
                        for w in range(W):
                            if keys[w, s] != mask[w, layer, i]:
                                same = False
                                break
                        if same:
                            found = s
                            break
                    if found < 0:
                        for w in range(W):
                            keys[w, m] = mask[w, layer, i]
                        size[m] = 1
                        m += 1
                    else:
                        size[found] += 1
            H, P2 = 0.0, 0.0
            for s in range(m):
                total = 0  # tokens whose set meets set s, its own included
                for t in range(m):
                    for w in range(W):
                        if keys[w, s] & keys[w, t]:
                            total += size[t]
                            break
                deg = total - 1.0
                H += size[s] * deg
                P2 += size[s] * deg * (deg - 1.0)
            out[2, d, layer], out[3, d, layer] = _moments(n, H, P2)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _low_bit(x) -> int:
    """Index of the lowest set bit of x > 0 (the popcount of the bits below it)."""
    y = np.uint64(x)
    y = (y & (~y + np.uint64(1))) - np.uint64(1)
    count = 0
    while y:
        y &= y - np.uint64(1)
        count += 1
    return count


@numba.njit(cache=True, nogil=True, parallel=True)
def document_moments_rows(first, mask, words, bits, starts, num_ids, dense, groups):
    """The same (4, docs, L) moments as `document_moments`, from TOKEN-MAJOR rows: first (N, L) ids
    and mask (N, L * words) top-k bitmasks (`bits` bits per word); layers run in parallel.

    `any` without the m^2 mask tests: the tokens of a document are grouped by their set (a 2^E
    table when dense, else by a hash of the words, sorted, equal words checked), each distinct
    set is listed under every expert it holds, and the tokens meeting set s are summed over the
    lists of s's experts, each meeting set once (a stamp). The cost per document and layer is
    O(n log n + sum_e c_e^2) for c_e distinct sets holding expert e: linear in n when the sets
    are few (small E) and about (k^2 / E) m^2 for m distinct sets of uniform top-k of E, where the
    m^2 tests of `document_moments` cost m^2 W. `groups` groups of whole documents run in
    parallel, each document's layers inside (its rows stay in cache)."""
    N, L = first.shape
    docs = len(starts) - 1
    out = np.zeros((4, docs, L))
    longest = 1
    for d in range(docs):
        longest = max(longest, starts[d + 1] - starts[d])
    for g in numba.prange(groups):  # groups of whole documents in parallel, a document's layers inside
        count = np.zeros(num_ids, np.int64)
        table = np.zeros((1 << num_ids) if dense else 1, np.int64)
        rep = np.empty(longest, np.int64)  # a token of each distinct set
        size = np.empty(longest, np.int64)  # tokens holding each distinct set
        hashes = np.empty(longest, np.uint64)
        per_expert = np.zeros(num_ids + 1, np.int64)  # CSR of the distinct sets holding each expert
        listed = np.empty(2 * longest, np.int64)  # grown when a document's sets hold more
        fill = np.zeros(num_ids, np.int64)
        stamp = np.full(longest, -1, np.int64)
        for d in range(g * docs // groups, (g + 1) * docs // groups):
            for layer in range(L):
                a, b = starts[d], starts[d + 1]
                n = b - a
                if n < 2:
                    break
                for i in range(a, b):
                    count[first[i, layer]] += 1
                H, P2 = 0.0, 0.0
                for i in range(a, b):  # each expert once: its count is cleared when met
                    c = count[first[i, layer]]
                    if c > 0:
                        H += c * (c - 1.0)
                        P2 += c * (c - 1.0) * (c - 2.0)
                        count[first[i, layer]] = 0
                out[0, d, layer], out[1, d, layer] = _moments(n, H, P2)
                w0 = layer * words
                m = 0
                if dense:
                    for i in range(a, b):
                        v = mask[i, w0]
                        if table[v] == 0:
                            rep[m] = i
                            m += 1
                        table[v] += 1
                    for s in range(m):
                        v = mask[rep[s], w0]
                        size[s] = table[v]
                        table[v] = 0
                else:
                    for i in range(a, b):
                        h = np.uint64(1469598103934665603)
                        for w in range(words):
                            h = (h ^ np.uint64(mask[i, w0 + w])) * np.uint64(1099511628211)
                            h ^= h >> np.uint64(29)
                        hashes[i - a] = h
                    order = np.argsort(hashes[:n])
                    j = 0
                    while j < n:  # a run of equal hashes: almost always one set
                        r = j
                        while r < n and hashes[order[r]] == hashes[order[j]]:
                            r += 1
                        first_set = m
                        for q in range(j, r):
                            i = a + order[q]
                            found = -1
                            for s in range(first_set, m):
                                same = True
                                for w in range(words):
                                    if mask[rep[s], w0 + w] != mask[i, w0 + w]:
                                        same = False
                                        break
                                if same:
                                    found = s
                                    break
                            if found < 0:
                                rep[m], size[m] = i, 1
                                m += 1
                            else:
                                size[found] += 1
                        j = r
                # every distinct set listed under each of its experts
                per_expert[:] = 0
                for s in range(m):
                    for w in range(words):
                        x = np.uint64(mask[rep[s], w0 + w])
                        while x:
                            per_expert[w * bits + _low_bit(x) + 1] += 1
                            x &= x - np.uint64(1)
                for e in range(num_ids):
                    per_expert[e + 1] += per_expert[e]
                if per_expert[num_ids] > len(listed):
                    listed = np.empty(2 * per_expert[num_ids], np.int64)
                fill[:] = 0
                for s in range(m):
                    for w in range(words):
                        x = np.uint64(mask[rep[s], w0 + w])
                        while x:
                            e = w * bits + _low_bit(x)
                            listed[per_expert[e] + fill[e]] = s
                            fill[e] += 1
                            x &= x - np.uint64(1)
                H, P2 = 0.0, 0.0
                for s in range(m):
                    total = 0  # tokens whose set meets set s, its own included
                    for w in range(words):
                        x = np.uint64(mask[rep[s], w0 + w])
                        while x:
                            e = w * bits + _low_bit(x)
                            for q in range(per_expert[e], per_expert[e + 1]):
                                t = listed[q]
                                if stamp[t] != s:
                                    stamp[t] = s
                                    total += size[t]
                            x &= x - np.uint64(1)
                    deg = total - 1.0
                    H += size[s] * deg
                    P2 += size[s] * deg * (deg - 1.0)
                stamp[:m] = -1
                out[2, d, layer], out[3, d, layer] = _moments(n, H, P2)
    return out


class PermutationNull:
    """Exact d = 1 locality after shuffling each document: per domain and layer the expected hits
    and their variance (`first`, `any`), the pairs (n - 1 per document), and per resampling unit
    the expected hits (float) in `units`, for the bootstrap of the excess.

    update() takes the chunks in layer-major form, as `locality.PermutedCounter` does, update_rows()
    token-major rows (what analyze passes: `row_kernels.token_rows_of`); the
    (incomplete) last document of a chunk is held until the next chunk completes it."""

    def __init__(self, num_domains: int, num_layers: int, num_ids: int, *, units: UnitPairCounts | None = None):
        self.D, self.L, self.E = num_domains, num_layers, num_ids
        self.first = np.zeros((num_domains, num_layers))  # expected hits
        self.any = np.zeros((num_domains, num_layers))
        self.var_first = np.zeros((num_domains, num_layers))  # their variance (documents independent)
        self.var_any = np.zeros((num_domains, num_layers))
        self.pairs = np.zeros(num_domains, dtype=np.int64)
        self.units = units
        self._held: tuple[np.ndarray, ...] | None = None  # rows of the document still open

    def update(
        self, first: np.ndarray, mask: np.ndarray, doc: np.ndarray, dom: np.ndarray, unit: np.ndarray | None = None
    ) -> None:
        """first (L, n), mask (W, L, n) layer-major, doc, dom and unit (n,): as update_rows."""
        rows_first, rows_mask = token_rows(first, mask)
        self.update_rows(rows_first, rows_mask, doc, dom, unit)

    def update_rows(
        self,
        first: np.ndarray,
        mask: np.ndarray,
        doc: np.ndarray,
        dom: np.ndarray,
        unit: np.ndarray | None = None,
    ) -> None:
        """Token-major rows: first (n, L) ids and mask (n, L * W) bitmasks (`row_kernels.token_rows_of`),
        doc, dom and unit (n,)."""
        n = len(doc)
        if n == 0:
            return
        unit = np.zeros(n, dtype=np.int64) if unit is None else unit
        cur = (first, mask, doc, dom, unit)
        head = 0  # rows that continue the held document
        if self._held is not None:
            other = np.flatnonzero(doc != self._held[2][-1])
            head = int(other[0]) if len(other) else n
            joined = tuple(np.concatenate([h, c[:head]]) for h, c in zip(self._held, cur))
            if head == n:
                self._held = joined
                return
            self._feed(joined)
        cut = max(head, _last_doc_start(doc))
        if cut > head:
            self._feed(tuple(a[head:cut] for a in cur))
        self._held = tuple(a[cut:].copy() for a in cur)

    def finish(self) -> None:
        if self._held is not None and len(self._held[2]):
            self._feed(self._held)
        self._held = None

    def _feed(self, rows: tuple[np.ndarray, ...]) -> None:
        first, mask, doc, dom, unit = rows
        starts, _ = runs(doc)
        bounds = np.append(starts, len(doc)).astype(np.int64)
        dtype, words = mask_dtype(self.E)
        assert mask.dtype == dtype and mask.shape[1] == self.L * words, "masks of another width"
        dense = words == 1 and self.E <= DENSE_BITS
        moments = document_moments_rows(
            np.ascontiguousarray(first),
            np.ascontiguousarray(mask),
            words,
            dtype.itemsize * 8,
            bounds,
            self.E,
            dense,
            max(1, min(len(bounds) - 1, 4 * numba.get_num_threads())),
        )  # (4, docs, L)
        pairs = np.diff(bounds) - 1  # (docs,)
        doc_dom = dom[starts]
        for out, m in zip((self.first, self.var_first, self.any, self.var_any), moments):
            np.add.at(out, doc_dom, m)
        self.pairs += np.bincount(doc_dom, weights=pairs, minlength=self.D).astype(np.int64)
        if self.units is not None:
            self.units.add_documents(moments[0], moments[2], pairs, unit[starts])

    def shares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """d = 1 (first, any) shares (D + 1, L), pooled domains last: the exact expectation over
        shuffles, and the exact standard deviation of one shuffle's share (NaN without pairs)."""
        pool = lambda a: np.concatenate([a, a.sum(0, keepdims=True)])  # noqa: E731
        pairs = np.append(self.pairs, self.pairs.sum()).astype(np.float64)[:, None]  # (D + 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (
                pool(self.first) / pairs,
                pool(self.any) / pairs,
                np.sqrt(pool(self.var_first)) / pairs,
                np.sqrt(pool(self.var_any)) / pairs,
            )
