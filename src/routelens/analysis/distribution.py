"""Expert distribution per domain and layer (Mixtral Fig. 7, 9, 10) and the distance between
domains (Jensen-Shannon, with bootstrap confidence intervals over documents).

One pass keeps expert counts per document, layer and choice (first, second, rest); domains
are sums over their documents. Documents are the resampling unit of the bootstrap because
tokens within a document are not independent (positional locality).
Memory: documents x layers x min(k, 3) x experts x 4 bytes.
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.pairs import DocNumbering, choices_last


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


class DistributionAccumulator:
    """Streams chunks into expert counts per document, layer and choice.

    Choices are kept in C = min(k, 3) categories: first, second, and the rest (k > 2), so one
    bincount gives both the per-choice distributions and the per-document totals the bootstrap
    resamples. Per-domain counts are sums over the domain's documents.
    """

    def __init__(self, num_domains: int, num_layers: int, num_experts: int, top_k: int):
        self.D, self.L, self.E, self.k = num_domains, num_layers, num_experts, top_k
        self.C = min(top_k, 3)
        self.tokens = np.zeros(num_domains, dtype=np.int64)
        self._docs = DocNumbering()
        self._doc_counts: list[np.ndarray] = []  # (docs in chunk, L, C, E) int32 each
        self._doc_domain: list[np.ndarray] = []
        self._category = np.minimum(np.arange(top_k), 2)  # choice -> category
        self._by_choice: np.ndarray | None = None  # cached result

    def update(self, experts: np.ndarray, domain: np.ndarray, doc_id: np.ndarray, *, et: np.ndarray | None = None) -> None:
        """experts (n, L, k), domain (n,) codes, doc_id (n,); `et` = experts as (k, L, n) if at hand."""
        n = len(domain)
        if n == 0:
            return
        L, E, C = self.L, self.E, self.C
        et = choices_last(experts) if et is None else et  # (k, L, n)
        self.tokens += np.bincount(domain, minlength=self.D)
        dense, continues = self._docs.number(doc_id)
        local = dense - dense[0]
        ndocs = int(local[-1]) + 1
        # One layer at a time (the bincount's output stays in cache):
        # key = (doc * C + category) * E + expert, per document (docs, C, E) cells.
        base = (local.astype(np.intp) * C)[None, :] + self._category[:, None]  # (k, n)
        base *= E
        per_doc = np.empty((ndocs, L, C, E), dtype=np.int32)
        key = np.empty_like(base)
        for layer in range(L):
            np.add(base, et[:, layer], out=key)
            per_doc[:, layer] = np.bincount(key.ravel(), minlength=ndocs * C * E).reshape(ndocs, C, E)
        starts = np.flatnonzero(np.concatenate([[True], local[1:] != local[:-1]]))
        doc_dom = domain[starts].astype(np.int32)
        if continues:  # the first document straddles the boundary: merge into the previous chunk's last
            self._doc_counts[-1][-1] += per_doc[0]
            per_doc, doc_dom = per_doc[1:], doc_dom[1:]
        if len(per_doc):  # a chunk inside one long document adds no new document
            self._doc_counts.append(per_doc)
            self._doc_domain.append(doc_dom)
        self._by_choice = None

    # -- results ---------------------------------------------------------------------------
    def doc_choice_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(docs, L, C, E) int32 expert counts per document and choice category, (docs,) domains."""
        if not self._doc_counts:
            return np.zeros((0, self.L, self.C, self.E), dtype=np.int32), np.zeros(0, dtype=np.int32)
        if len(self._doc_counts) > 1:  # keep one array, so later calls are free
            self._doc_counts = [np.concatenate(self._doc_counts)]
            self._doc_domain = [np.concatenate(self._doc_domain)]
        return self._doc_counts[0], self._doc_domain[0]

    def doc_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(docs, L, E) int32 expert counts per document over all choices, and (docs,) domains."""
        docs, dom = self.doc_choice_counts()
        return docs.sum(axis=2, dtype=np.int32), dom

    def by_choice(self) -> np.ndarray:
        """(D, L, C, E) int64 counts per domain: [..., 0, :] first choice, [..., 1, :] second."""
        if self._by_choice is None:
            docs, dom = self.doc_choice_counts()
            flat = docs.reshape(len(docs), -1)
            out = np.zeros((self.D, flat.shape[1]), dtype=np.int64)
            for d in range(self.D):  # a few domains: one reduction each
                out[d] = flat[dom == d].sum(axis=0, dtype=np.int64)
            self._by_choice = out.reshape(self.D, self.L, self.C, self.E)
        return self._by_choice

    def totals(self) -> np.ndarray:
        """(D, L, E) assignments per expert over all k choices."""
        return self.by_choice().sum(axis=2)

    def documents(self) -> np.ndarray:
        """(D,) documents per domain."""
        return np.bincount(self.doc_choice_counts()[1], minlength=self.D)


def bootstrap_shares(doc_counts: np.ndarray, replicates: int, rng: np.random.Generator, block: int = 1 << 23) -> np.ndarray:
    """Resample documents with replacement `replicates` times: (docs, L, E) -> (B, L, E) shares.

    A replicate's totals are a multinomial weighting of the documents times their counts, one
    matrix product for a block of replicates (block bounds the (B, docs) weight matrix).
    """
    n, L, E = doc_counts.shape
    flat = doc_counts.reshape(n, L * E).astype(np.float64)
    out = np.empty((replicates, L * E))
    step = max(1, block // max(n, 1))
    uniform = np.full(n, 1.0 / n)
    for lo in range(0, replicates, step):
        hi = min(replicates, lo + step)
        weights = rng.multinomial(n, uniform, size=hi - lo).astype(np.float64)  # (b, docs)
        out[lo:hi] = weights @ flat
    return normalise(out.reshape(replicates, L, E))


def domain_distance(totals: np.ndarray, doc_counts: np.ndarray, doc_domain: np.ndarray, *, replicates: int, seed: int, level: float = 0.95) -> dict:
    """JS divergence between every pair of domains per layer, with basic bootstrap intervals.

    totals (D, L, E), doc_counts (docs, L, E), doc_domain (docs,). Returns {"js": (D, D, L),
    "low": (D, D, L), "high": (D, D, L)} with NaN where no interval exists. The basic interval
    [2 js - q_hi, 2 js - q_lo] corrects the upward bias of a plug-in divergence, so two domains
    with the same routing get a lower bound at 0 instead of a spurious positive one.
    """
    D, L, _ = totals.shape
    shares = normalise(totals)  # (D, L, E)
    js = np.zeros((D, D, L))
    low = np.full((D, D, L), np.nan)
    high = np.full((D, D, L), np.nan)
    for a in range(D):
        for b in range(a + 1, D):
            js[a, b] = js[b, a] = js_divergence(shares[a], shares[b])
    docs_per_domain = np.bincount(doc_domain, minlength=D)
    if replicates <= 0 or D < 2:
        return {"js": js, "low": low, "high": high}
    rng = np.random.default_rng(seed)
    boot = [
        bootstrap_shares(doc_counts[doc_domain == d], replicates, rng) if docs_per_domain[d] >= 2 else None
        for d in range(D)
    ]  # fmt: skip
    alpha = (1.0 - level) / 2
    for a in range(D):
        for b in range(a + 1, D):
            if boot[a] is None or boot[b] is None:
                continue
            rep = js_divergence(boot[a], boot[b])  # (B, L)
            q_lo, q_hi = np.nanquantile(rep, [alpha, 1 - alpha], axis=0)
            low[a, b] = low[b, a] = np.clip(2 * js[a, b] - q_hi, 0.0, 1.0)
            high[a, b] = high[b, a] = np.clip(2 * js[a, b] - q_lo, 0.0, 1.0)
    return {"js": js, "low": low, "high": high}
