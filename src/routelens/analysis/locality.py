"""Positional locality of routing (Mixtral Table 5, Fig. 10): how often tokens at distance d in
a document keep their first expert (`first`) or share an expert of their top-k sets (`any`).

Three streaming accumulators:
- `PairCounter`: pairs (i, i+d) for d = 1..max_distance, anchored on every `stride`-th row
  (stride 1 and max_distance 1 give the exact Table 5 numbers), counted by the compiled kernels
  of `pair_kernels` (tests/analysis/test_pair_kernels.py holds them to a per-pair loop). The
  last max_distance rows of a chunk are carried, so pairs across chunk boundaries count. Pairs that straddle a window
  boundary (the tracer cut the document into `seq_len` windows, each its own forward pass, so
  the second token was routed without the first in its context) are left out unless asked.
- `PermutedCounter`: the same statistics after shuffling positions within each document, over
  several seeded permutations — what an unbalanced expert load gives without any locality. The
  reference of `permutation_null.PermutationNull`, which analyze uses: the same null, exactly.
  Whole documents are needed, so the (incomplete) last document of a chunk is held until the
  next chunk completes it.
- `random_baseline`: the exact values for independent uniform routing.

With `UnitPairCounts`, the d = 1 counts are also kept per resampling unit (the documents, or
units of documents, of `distribution.DistributionAccumulator`), so `locality_intervals`
bootstraps them exactly as the domain distances are bootstrapped.
"""

from __future__ import annotations

from math import comb

import numpy as np

from routelens.analysis.pair_kernels import count_pairs_by_anchor
from routelens.analysis.pairs import count_by_domain, runs, sets_overlap, tokens_last


def random_baseline(num_experts: int, top_k: int) -> dict[str, float]:
    """Locality of independent uniform top-k routing: first = 1/E, any = 1 - C(E-k, k)/C(E, k)."""
    E, k = num_experts, top_k
    return {"first": 1.0 / E, "any": 1.0 - comb(E - k, k) / comb(E, k)}


class UnitPairCounts:
    """Consecutive-pair counts per resampling unit: real hits, permuted hits (summed over the
    permutations, or the exact expectation: float) and pairs, (S, L) and (S,) for S units
    (domains x units per domain)."""

    def __init__(self, num_units: int, num_layers: int, dtype=np.int64):
        self.first = np.zeros((num_units, num_layers), dtype=dtype)
        self.any = np.zeros((num_units, num_layers), dtype=dtype)
        self.pairs = np.zeros(num_units, dtype=np.int64)

    def add_documents(self, first: np.ndarray, any_: np.ndarray, pairs: np.ndarray, unit: np.ndarray) -> None:
        """Per-document hits (docs, L) (expected hits of the exact null: float), pairs and units (docs,)."""
        np.add.at(self.first, unit, first)
        np.add.at(self.any, unit, any_)
        np.add.at(self.pairs, unit, pairs)

    def add(
        self, hit_first: np.ndarray, hit_any: np.ndarray, valid: np.ndarray, unit: np.ndarray, times: int = 1
    ) -> None:
        """hits (L, m) (bool, or counts summed over permutations), valid (m,), unit (m,) of each
        pair's anchor, in trace order (a unit's pairs come in runs: one bincount per layer over
        the runs, no (L, m) temporaries). `times`: how many permutations the hits sum over (each
        pair is counted that many times)."""
        if not valid.any():
            return
        starts, units = runs(unit)
        run_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(unit))))  # (m,)
        keep = np.flatnonzero(valid)
        run_of = run_of[keep]
        for hits, out in ((hit_first, self.first), (hit_any, self.any)):
            per_run = np.stack(
                [np.bincount(run_of, weights=hits[layer, keep], minlength=len(starts)) for layer in range(len(hits))]
            )
            np.add.at(out, units, np.rint(per_run.T).astype(np.int64))  # a unit can hold several documents
        np.add.at(self.pairs, units, times * np.bincount(run_of, minlength=len(starts)))


def straddles(pos_a: np.ndarray, pos_b: np.ndarray, window: int) -> np.ndarray:
    """Pairs whose tokens lie in different `window`-token windows of their document (the tracer
    cuts a document at positions 0, seq_len, 2 seq_len, ...; positions count from the document's
    start, so the window is position // seq_len). False everywhere when window <= 0 (unknown)."""
    if window <= 0:
        return np.zeros(len(pos_a), dtype=bool)
    return (pos_a.astype(np.int64) // window) != (pos_b.astype(np.int64) // window)


def token_rows(first: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Layer-major first ids (L, n) and masks (W, L, n) -> token-major (n, L) and (n, L * W), the
    rows the pair kernel reads (a token's layers side by side)."""
    W, L, n = mask.shape
    rows_mask = tokens_last(mask.reshape(W * L, n)).reshape(n, W, L).transpose(0, 2, 1)
    return tokens_last(first), np.ascontiguousarray(rows_mask).reshape(n, L * W)


class PairCounter:
    """Counts, per domain and layer, pairs at distance d = 1..max_distance with equal first
    experts and with overlapping top-k sets.

    update() takes a chunk in layer-major form (`pairs.layer_major`): first-choice ids (L, n),
    top-k masks (W, L, n), then doc ids, positions and domain codes (n,), in trace order, and,
    with `units`, the resampling unit of each row. `window` > 0 leaves out pairs that straddle a
    window boundary (counted in `straddling`); 0 keeps every pair of a document.
    """

    def __init__(
        self,
        num_domains: int,
        num_layers: int,
        *,
        max_distance: int = 1,
        stride: int = 1,
        window: int = 0,
        units: UnitPairCounts | None = None,
    ):
        assert max_distance >= 1 and stride >= 1
        self.D, self.L, self.dmax, self.stride, self.window = num_domains, num_layers, max_distance, stride, window
        self.units = units  # d = 1 counts per resampling unit (shared between counters)
        self.first = np.zeros((num_domains, num_layers, max_distance), dtype=np.int64)
        self.any = np.zeros((num_domains, num_layers, max_distance), dtype=np.int64)
        self.pairs = np.zeros((num_domains, max_distance), dtype=np.int64)
        self.straddling = np.zeros((num_domains, max_distance), dtype=np.int64)  # pairs left out
        self._tail: tuple[np.ndarray, ...] | None = None  # last max_distance tokens seen
        self._rows = 0  # tokens seen before the current chunk

    def update(
        self,
        first: np.ndarray,
        mask: np.ndarray,
        doc: np.ndarray,
        pos: np.ndarray,
        dom: np.ndarray,
        unit: np.ndarray | None = None,
        *,
        rows: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Layer-major first (L, n) and mask (W, L, n); `rows`: their `token_rows(first, mask)` if at hand."""
        rows_first, rows_mask = rows or token_rows(first, mask)
        self.update_rows(rows_first, rows_mask, mask.shape[0], doc, pos, dom, unit)

    def update_rows(
        self,
        first: np.ndarray,
        mask: np.ndarray,
        words: int,
        doc: np.ndarray,
        pos: np.ndarray,
        dom: np.ndarray,
        unit: np.ndarray | None = None,
    ) -> None:
        """Token-major rows: first (n, L) ids and mask (n, L * words) bitmasks (`token_rows`, or
        `row_kernels.token_rows_of` straight from the reader's (n, L, k) ids), doc, pos, dom, unit (n,)."""
        n = len(doc)
        if n == 0:
            return
        unit = np.zeros(n, dtype=np.int64) if unit is None else unit
        cur = (first, mask, doc, pos, dom, unit)
        if self._tail is not None:  # pairs from the last rows of the previous chunks into this one
            T = len(self._tail[2])
            ext = tuple(np.concatenate([t, c[: self.dmax]]) for t, c in zip(self._tail, cur))
            self._count(ext, words, anchors=T, partner_from=T, row0=self._rows - T)
            last = ext if n < self.dmax else cur
        else:
            last = cur
        self._count(cur, words, anchors=n, partner_from=0, row0=self._rows)
        self._tail = tuple(a[-self.dmax :].copy() for a in last)
        self._rows += n

    def _count(self, cols: tuple, words: int, *, anchors: int, partner_from: int, row0: int) -> None:
        """Anchor by anchor on token-major rows; counts of this call in int32 (at most `anchors`)."""
        first, mask, doc, pos, dom, unit = cols
        units = self.units
        none = np.zeros((1, self.L), dtype=np.int64)
        hit_first = np.zeros((self.D, self.dmax, self.L), dtype=np.int32)
        hit_any = np.zeros_like(hit_first)
        count_pairs_by_anchor(
            np.ascontiguousarray(first),
            np.ascontiguousarray(mask),
            words,
            np.ascontiguousarray(doc),
            np.ascontiguousarray(pos),
            np.ascontiguousarray(dom),
            np.ascontiguousarray(unit),
            anchors,
            partner_from,
            row0,
            self.stride,
            self.window,
            hit_first,
            hit_any,
            self.pairs,
            self.straddling,
            none if units is None else units.first,
            none if units is None else units.any,
            none[0] if units is None else units.pairs,
            units is not None,
        )
        self.first += hit_first.transpose(0, 2, 1)
        self.any += hit_any.transpose(0, 2, 1)

    def shares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first, any) shares (D + 1, L, dmax) with the pooled domains last (NaN without pairs),
        and pairs (D + 1, dmax)."""
        first = np.concatenate([self.first, self.first.sum(0, keepdims=True)])
        any_ = np.concatenate([self.any, self.any.sum(0, keepdims=True)])
        pairs = np.concatenate([self.pairs, self.pairs.sum(0, keepdims=True)])
        with np.errstate(divide="ignore", invalid="ignore"):
            return first / pairs[:, None, :], any_ / pairs[:, None, :], pairs


class PermutedCounter:
    """Locality after seeded random permutations of the rows of each document: per permutation
    the per-domain counts (for the spread between permutations), and per resampling unit the
    counts summed over the permutations. A shuffle keeps every document where it was, so pair j
    belongs to the same document (and unit) in every permutation: the hits are summed over the
    permutations first and reduced per unit once."""

    def __init__(
        self,
        num_domains: int,
        num_layers: int,
        *,
        seed: int = 0,
        permutations: int = 1,
        units: UnitPairCounts | None = None,
    ):
        assert permutations >= 1
        self.D, self.L, self.P = num_domains, num_layers, permutations
        self.first = np.zeros((permutations, num_domains, num_layers), dtype=np.int64)
        self.any = np.zeros((permutations, num_domains, num_layers), dtype=np.int64)
        self.pairs = np.zeros(num_domains, dtype=np.int64)  # the same in every permutation
        self.units = units
        self.rng = np.random.default_rng(seed)
        self._held: tuple[np.ndarray, ...] | None = None  # rows of the document still open

    def update(
        self, first: np.ndarray, mask: np.ndarray, doc: np.ndarray, dom: np.ndarray, unit: np.ndarray | None = None
    ) -> None:
        """first (L, n), mask (W, L, n), doc, dom and unit (n,)."""
        unit = np.zeros(len(doc), dtype=np.int64) if unit is None else unit
        cur = (first, mask, doc, dom, unit)
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
        """Whole documents: pairs are consecutive rows of one document after the shuffle."""
        first, mask, doc, dom, unit = rows
        starts, _ = runs(doc)
        doc_number = np.zeros(len(doc), dtype=np.int64)
        doc_number[starts[1:]] = 1
        doc_number = np.cumsum(doc_number)
        valid = doc[1:] == doc[:-1]  # (m,) the same for every permutation
        anchor_dom = dom[:-1]
        self.pairs += count_by_domain(np.zeros((0, len(valid)), dtype=bool), valid, anchor_dom, self.D)[1]
        summed = (
            None
            if self.units is None
            else (np.zeros((self.L, len(valid)), np.int32), np.zeros((self.L, len(valid)), np.int32))
        )
        for p in range(self.P):
            # Documents stay in order; tokens within each are shuffled (random key within the doc).
            perm = np.argsort(doc_number + self.rng.random(len(doc)), kind="stable")
            f, m = first[:, perm], mask[..., perm]
            same, overlap = f[:, 1:] == f[:, :-1], sets_overlap(m[..., 1:], m[..., :-1])  # (L, m)
            self.first[p] += count_by_domain(same, valid, anchor_dom, self.D)[0]
            self.any[p] += count_by_domain(overlap, valid, anchor_dom, self.D)[0]
            if summed is not None:
                np.add(summed[0], same, out=summed[0])
                np.add(summed[1], overlap, out=summed[1])
        if summed is not None:
            self.units.add(summed[0], summed[1], valid, unit[:-1], times=self.P)

    @property
    def counter(self) -> PairCounter:
        """The first permutation as a PairCounter (the one permutation of earlier releases)."""
        c = PairCounter(self.D, self.L)
        c.first[:, :, 0], c.any[:, :, 0], c.pairs[:, 0] = self.first[0], self.any[0], self.pairs
        return c

    def shares(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """d = 1 (first, any) shares (D + 1, L): the mean over permutations and the standard
        deviation between them (0 with one permutation)."""
        pairs = np.append(self.pairs, self.pairs.sum()).astype(np.float64)[None, :, None]  # (1, D + 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.concatenate([self.first, self.first.sum(1, keepdims=True)], axis=1) / pairs  # (P, D + 1, L)
            any_ = np.concatenate([self.any, self.any.sum(1, keepdims=True)], axis=1) / pairs
            ddof = 1 if self.P > 1 else 0
            return first.mean(0), any_.mean(0), first.std(0, ddof=ddof), any_.std(0, ddof=ddof)


def locality_intervals(
    real: UnitPairCounts,
    permuted: UnitPairCounts,
    domain_units: list[np.ndarray],
    *,
    replicates: int,
    seed: int,
    level: float = 0.95,
) -> dict:
    """Percentile bootstrap intervals over documents (resampling units) of the d = 1 locality and
    of real minus permuted, per domain and pooled: {"first", "any", "first_excess", "any_excess"}
    each a (low, high) pair of (D + 1, L) arrays, NaN where a domain has under 2 units or
    replicates = 0. Units are resampled within each domain; the pooled row sums the domains'
    replicates (a stratified bootstrap: each domain keeps its number of documents)."""
    from routelens.analysis.distribution import bootstrap_totals, percentile_interval

    D, L = len(domain_units), real.first.shape[1]
    keys = ("first", "any", "first_excess", "any_excess")
    out = {key: (np.full((D + 1, L), np.nan), np.full((D + 1, L), np.nan)) for key in keys}
    if replicates <= 0:
        return out
    # One row per unit: real first and any hits, permuted ones (summed over the permutations),
    # then the real and the permuted pair counts (they differ by the straddling pairs left out).
    table = np.concatenate(
        [real.first, real.any, permuted.first, permuted.any, real.pairs[:, None], permuted.pairs[:, None]], axis=1
    )
    rng = np.random.default_rng(seed)
    boots = [bootstrap_totals(table[u], replicates, rng) if len(u) >= 2 else None for u in domain_units]
    pooled = sum(b for b in boots if b is not None) if all(b is not None for b in boots) else None
    for j, boot in enumerate([*boots, pooled]):
        if boot is None:
            continue
        pairs, perm_pairs = boot[:, -2:-1], boot[:, -1:]  # (B, 1) each
        with np.errstate(divide="ignore", invalid="ignore"):
            f, a = boot[:, :L] / pairs, boot[:, L : 2 * L] / pairs
            pf, pa = boot[:, 2 * L : 3 * L] / perm_pairs, boot[:, 3 * L : 4 * L] / perm_pairs
        for key, rep in zip(keys, (f, a, f - pf, a - pa)):
            low, high = percentile_interval(rep, level)
            out[key][0][j], out[key][1][j] = low, high
    return out


def _last_doc_start(doc: np.ndarray) -> int:
    """Row where the last document of `doc` begins."""
    change = np.flatnonzero(doc[1:] != doc[:-1])
    return int(change[-1]) + 1 if len(change) else 0
