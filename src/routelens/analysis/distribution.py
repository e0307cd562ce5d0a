"""Expert distribution per domain and layer (Mixtral Fig. 7, 9, 10) and the distance between
domains (the Jensen-Shannon divergence, and its square root the JS distance, with percentile
bootstrap intervals over documents).

One pass keeps expert counts per resampling unit, layer and choice (first, second, rest); domains
are sums over their units. Documents are what the bootstrap resamples, because tokens within a
document are not independent (positional locality); to keep memory bounded however long the
trace, the documents of a domain are dealt round-robin into at most U units (see
`DistributionAccumulator`). Memory: domains x U x layers x min(k, 3) x experts x 8 bytes, with U
chosen to fit `UNIT_BUDGET` (64 MiB), independent of the number of tokens and documents.
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.pairs import DocNumbering
from routelens.analysis.row_kernels import count_slots


def js_divergence(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jensen-Shannon divergence in bits (in [0, 1]) between distributions along `axis`."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / np.where(m > 0, m, 1.0)), 0.0)
        return terms.sum(axis=axis)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def normalise(counts: np.ndarray, axis: int = -1) -> np.ndarray:
    """Counts -> shares along `axis`; NaN where the total is 0."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return counts / total


UNIT_BUDGET = 64 << 20  # bytes of per-unit counts, all domains together
MIN_UNITS = 256  # resampling units per domain at least, whatever the budget
MAX_UNITS = 1 << 16  # and at most: the bootstrap's time grows with the units, its precision hardly


def default_units(num_domains: int, num_layers: int, num_experts: int, top_k: int, budget: int = UNIT_BUDGET) -> int:
    """Resampling units per domain that fit `budget` bytes of int64 counts for all domains,
    clipped to [MIN_UNITS, MAX_UNITS]. 4 domains x 32 layers x top-2 of 8: 4096 units (64 MiB);
    4 x 60 layers x top-8 of 256 (Qwen3-style): 256 units (376 MiB, the floor wins)."""
    per_unit = num_layers * min(top_k, 3) * num_experts * 8
    return int(np.clip(budget // max(1, num_domains * per_unit), MIN_UNITS, MAX_UNITS))


class DistributionAccumulator:
    """Streams chunks into expert counts per resampling unit, layer and choice.

    Choices are kept in C = min(k, 3) categories: first, second, and the rest (k > 2), so one
    bincount gives both the per-choice distributions and the per-unit totals the bootstrap
    resamples. Per-domain counts are sums over the domain's units, so they are exact.

    **Bounded memory.** Per domain there are at most `units` = U resampling units (default
    `default_units`: what fits `UNIT_BUDGET`, 64 MiB for all domains, and at least a few hundred
    per domain). Document j of a domain (numbered 0, 1, ... in trace order within the domain)
    goes to unit j mod U, whole: a document that straddles chunks stays in its unit. Counts are
    summed per unit (int64). A domain with at most U documents thus has exactly one unit per
    document, in trace order: on such traces the counts, the bootstrap and every result are
    bit-identical to a per-document accumulator. Memory is D x U x L x C x E x 8 bytes however
    many tokens and documents the trace holds; `documents()` counts documents separately.

    **Why the bootstrap over units estimates the same variance.** A domain's counts are the sum
    of its n documents, treated as iid draws (the document bootstrap's own assumption). Dealing
    them round-robin into U units makes each unit the sum of n/U (or n/U + 1) of those iid
    documents, chosen by position only, so the units are iid too, and the domain total is the
    sum of U iid units. Resampling U units with replacement estimates Var(total) as
    U x Var(unit) = U x (n/U) x Var(document) = n x Var(document): the same quantity the
    document bootstrap estimates. What changes is the precision of that estimate, which rests on
    U units instead of n documents (relative standard error about sqrt(2/U): 9% at U = 256, 2%
    at U = 4096), and the shape of the replicate distribution, which is closer to normal (each
    unit is itself a sum). If a domain's documents are ordered by something that shifts routing
    (length, topic), every unit is a systematic sample across that order, which can only make
    the units more alike and the interval a little narrower; traces recorded from shuffled or
    heterogeneous corpora are not affected.
    """

    def __init__(self, num_domains: int, num_layers: int, num_experts: int, top_k: int, *, units: int | None = None):
        self.D, self.L, self.E, self.k = num_domains, num_layers, num_experts, top_k
        self.C = min(top_k, 3)
        self.U = default_units(num_domains, num_layers, num_experts, top_k) if units is None else int(units)
        if self.U < 1:
            raise ValueError(f"units={units} must be >= 1")
        self.tokens = np.zeros(num_domains, dtype=np.int64)
        self.docs_per_domain = np.zeros(num_domains, dtype=np.int64)  # exact document counts
        self._docs = DocNumbering()
        # Per domain: (capacity, L, C, E) int64 unit counts (grown up to U rows as documents
        # arrive), and the global number of each unit's first document (to list units in trace order).
        self._units = [np.zeros((0, num_layers, self.C, num_experts), dtype=np.int64) for _ in range(num_domains)]
        self._first = [np.zeros(0, dtype=np.int64) for _ in range(num_domains)]
        self._last_unit: tuple[int, int] | None = None  # (domain, unit) of the last document seen
        self._category = np.minimum(np.arange(top_k), 2)  # choice -> category
        self._by_choice: np.ndarray | None = None  # cached result
        self.row_unit = np.zeros(0, dtype=np.int64)  # (n,) unit (domain * U + unit) of each row of the last chunk

    def _filled(self, d: int) -> int:
        return int(min(self.docs_per_domain[d], self.U))

    def update(
        self, experts: np.ndarray, domain: np.ndarray, doc_id: np.ndarray, *, et: np.ndarray | None = None
    ) -> None:
        """experts (n, L, k) (or None and `et`, the same as (k, L, n)), domain (n,) codes, doc_id (n,)."""
        n = len(domain)
        self.row_unit = np.zeros(0, dtype=np.int64)
        if n == 0:
            return
        L, E, C, U = self.L, self.E, self.C, self.U
        if experts is None:  # only the layer-major form at hand
            experts = et.transpose(2, 1, 0)
        self.tokens += np.bincount(domain, minlength=self.D)
        dense, continues = self._docs.number(doc_id)
        local = dense - dense[0]  # (n,) document of each row within the chunk
        starts = np.flatnonzero(np.concatenate([[True], local[1:] != local[:-1]]))
        doc_dom = domain[starts].astype(np.int64)  # (docs in chunk,) domain of each document
        doc_unit = np.empty(len(starts), dtype=np.int64)
        fresh = 1 if continues else 0  # the first document may continue the previous chunk's last
        if continues:
            doc_dom[0], doc_unit[0] = self._last_unit
        new_dom, new_number = doc_dom[fresh:], dense[starts[fresh:]]
        for d in np.unique(new_dom).tolist():  # a few domains: number their new documents
            sel = np.flatnonzero(new_dom == d)
            j = self.docs_per_domain[d] + np.arange(len(sel))  # index of each document within its domain
            doc_unit[fresh + sel] = j % U
            opened = j < U  # documents that open a unit
            if opened.any():
                self._grow(d, int(j[opened][-1]) + 1)
                self._first[d][j[opened]] = new_number[sel[opened]]
            self.docs_per_domain[d] += len(sel)
        self._last_unit = (int(doc_dom[-1]), int(doc_unit[-1]))
        # Count into the distinct (domain, unit) slots this chunk touches (compiled, layers in parallel).
        doc_slot = doc_dom * U + doc_unit  # (docs in chunk,) global unit number: domain * U + unit
        # The unit of every row of this chunk, for the analyses that bootstrap the same units (locality).
        self.row_unit = doc_slot[local]
        slots, slot_of_doc = np.unique(doc_slot, return_inverse=True)
        per_slot = np.zeros((len(slots), L, C, E), dtype=np.int64)
        count_slots(np.ascontiguousarray(experts), slot_of_doc.reshape(-1)[local], self._category, per_slot)
        slot_dom, slot_unit = np.divmod(slots, U)
        for d in np.unique(slot_dom).tolist():
            sel = slot_dom == d
            self._units[d][slot_unit[sel]] += per_slot[sel]  # distinct units: a plain fancy add
        self._by_choice = None

    def _grow(self, d: int, size: int) -> None:
        """Room for `size` units in domain d (doubling, at most U)."""
        cap = len(self._units[d])
        if size <= cap:
            return
        cap = min(self.U, max(size, 2 * cap, 16))
        grown = np.zeros((cap, self.L, self.C, self.E), dtype=np.int64)
        grown[: len(self._units[d])] = self._units[d]
        first = np.zeros(cap, dtype=np.int64)
        first[: len(self._first[d])] = self._first[d]
        self._units[d], self._first[d] = grown, first

    # -- results ---------------------------------------------------------------------------
    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        """Units of all domains in the order of their first document: (order, domains)."""
        first = np.concatenate([self._first[d][: self._filled(d)] for d in range(self.D)])
        dom = np.repeat(np.arange(self.D, dtype=np.int32), [self._filled(d) for d in range(self.D)])
        order = np.argsort(first, kind="stable")
        return order, dom[order]

    def doc_choice_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(units, L, C, E) int64 expert counts per resampling unit and choice category, and
        (units,) domains, units in the order of their first document. A unit is one document
        while its domain has at most U documents."""
        order, dom = self._order()
        return np.concatenate([self._units[d][: self._filled(d)] for d in range(self.D)])[order], dom

    def doc_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(units, L, E) int64 expert counts per resampling unit over all choices, and (units,) domains."""
        order, dom = self._order()
        return np.concatenate([self._units[d][: self._filled(d)].sum(axis=2) for d in range(self.D)])[order], dom

    def by_choice(self) -> np.ndarray:
        """(D, L, C, E) int64 counts per domain: [..., 0, :] first choice, [..., 1, :] second."""
        if self._by_choice is None:
            out = np.zeros((self.D, self.L, self.C, self.E), dtype=np.int64)
            for d in range(self.D):  # a few domains: one reduction each
                out[d] = self._units[d][: self._filled(d)].sum(axis=0)
            self._by_choice = out
        return self._by_choice

    def totals(self) -> np.ndarray:
        """(D, L, E) assignments per expert over all k choices."""
        return self.by_choice().sum(axis=2)

    def unit_domains(self) -> list[np.ndarray]:
        """Per domain, the global unit numbers (domain * U + unit) that hold documents."""
        return [d * self.U + np.arange(self._filled(d)) for d in range(self.D)]

    def documents(self) -> np.ndarray:
        """(D,) documents per domain (exact, whatever U)."""
        return self.docs_per_domain.copy()


def bootstrap_totals(
    unit_counts: np.ndarray, replicates: int, rng: np.random.Generator, block: int = 1 << 23
) -> np.ndarray:
    """Resample units (documents, or the resampling units of `DistributionAccumulator`) with
    replacement `replicates` times: (units, ...) counts -> (B, ...) resampled totals.

    A replicate's totals are a multinomial weighting of the units times their counts, one
    matrix product for a block of replicates (block bounds the (B, units) weight matrix). Every
    document bootstrap of the analyses (domain distances, POS shares, locality) goes through here.
    """
    n = unit_counts.shape[0]
    rest = unit_counts.shape[1:]
    flat = unit_counts.reshape(n, -1).astype(np.float64)
    out = np.empty((replicates, flat.shape[1]))
    step = max(1, block // max(n, 1))
    uniform = np.full(n, 1.0 / n)
    for lo in range(0, replicates, step):
        hi = min(replicates, lo + step)
        weights = rng.multinomial(n, uniform, size=hi - lo).astype(np.float64)  # (b, units)
        out[lo:hi] = weights @ flat
    return out.reshape(replicates, *rest)


def bootstrap_shares(
    doc_counts: np.ndarray, replicates: int, rng: np.random.Generator, block: int = 1 << 23
) -> np.ndarray:
    """Resampled shares: (docs, L, E) counts -> (B, L, E) shares (see `bootstrap_totals`)."""
    return normalise(bootstrap_totals(doc_counts, replicates, rng, block))


def percentile_interval(replicates: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval (low, high) along `axis`, NaN-aware. Unlike the basic
    interval it lies within the replicates' range, and it contains the point estimate whenever
    the estimate lies between the replicates' quantiles (for a plug-in statistic, nearly always)."""
    alpha = (1.0 - level) / 2
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as meant
            low, high = np.nanquantile(replicates, [alpha, 1 - alpha], axis=axis)
    return low, high


def domain_distance(
    totals: np.ndarray,
    doc_counts: np.ndarray,
    doc_domain: np.ndarray,
    *,
    replicates: int,
    seed: int,
    level: float = 0.95,
) -> dict:
    """JS divergence between every pair of domains per layer, with percentile bootstrap intervals.

    totals (D, L, E), doc_counts (docs, L, E), doc_domain (docs,): documents, or the resampling
    units of `DistributionAccumulator.doc_counts` (documents dealt round-robin). Returns {"js": (D, D, L),
    "low": (D, D, L), "high": (D, D, L), "basic_low", "basic_high"} with NaN where no interval exists.

    `low`/`high` is the percentile interval of the replicates: it contains the point estimate
    (which the replicates straddle), and the square root maps it onto the interval of the JS
    distance. The plug-in divergence is biased upward (two samples of one routing give JS > 0),
    so for domains that route alike the percentile interval sits above 0; the basic interval
    [2 js - q_hi, 2 js - q_lo] (`basic_low`/`basic_high`, clipped to [0, 1]) corrects that bias,
    reaching 0 for identical routing, but can exclude the estimate itself.
    """
    D, L, _ = totals.shape
    shares = normalise(totals)  # (D, L, E)
    js = np.zeros((D, D, L))
    out = {key: np.full((D, D, L), np.nan) for key in ("low", "high", "basic_low", "basic_high")}
    for a in range(D):
        for b in range(a + 1, D):
            js[a, b] = js[b, a] = js_divergence(shares[a], shares[b])
    docs_per_domain = np.bincount(doc_domain, minlength=D)
    if replicates <= 0 or D < 2:
        return {"js": js, **out}
    rng = np.random.default_rng(seed)
    boot = [
        bootstrap_shares(doc_counts[doc_domain == d], replicates, rng) if docs_per_domain[d] >= 2 else None
        for d in range(D)
    ]
    for a in range(D):
        for b in range(a + 1, D):
            if boot[a] is None or boot[b] is None:
                continue
            rep = js_divergence(boot[a], boot[b])  # (B, L)
            q_lo, q_hi = percentile_interval(rep, level)
            pairs = {
                "low": q_lo,
                "high": q_hi,
                "basic_low": np.clip(2 * js[a, b] - q_hi, 0.0, 1.0),
                "basic_high": np.clip(2 * js[a, b] - q_lo, 0.0, 1.0),
            }
            for key, value in pairs.items():
                out[key][a, b] = out[key][b, a] = value
    return {"js": js, **out}
