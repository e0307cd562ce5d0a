"""Agreement between two routings of the same tokens, counted from aligned (n, L, k) id arrays:
first choice equal, top-k overlap, top-k set equal, and flips binned by the router's margin.

Pure counting (arrays in, arrays out; numpy only), so that both `routelens compare` (two traces,
analysis/compare.py) and generation traces (generated against teacher-forced routing,
trace/generate.py) count alike without the trace stage importing the analyses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MARGIN_EDGES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # bins of the router margin (probabilities)


def choice_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, L, k) ids of A and B -> (n, L) |top-k of A ∩ top-k of B| (ids within a row are distinct)."""
    return (a[..., :, None] == b[..., None, :]).any(-1).sum(-1)


def router_margin(probs: np.ndarray, k: int) -> np.ndarray:
    """(n, L, E) router probabilities -> (n, L) p_(k) - p_(k+1), the k-th largest minus the next."""
    p = probs.astype(np.float32)
    top = np.sort(-np.partition(-p, k, axis=-1)[..., : k + 1], axis=-1)  # the k+1 largest, ascending
    return top[..., 1] - top[..., 0]


def weight_margin(weights: np.ndarray) -> np.ndarray:
    """(n, L, k >= 2) chosen weights -> (n, L) w_1 - w_2 (first minus second choice)."""
    w = weights.astype(np.float32)
    return w[..., 0] - w[..., 1]


def margin_bins(margin: np.ndarray, flipped: np.ndarray, edges=MARGIN_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """(counts, flips) per margin bin [e_i, e_i+1) (the last bin closed) over all token-layers."""
    edges = np.asarray(edges, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, margin.reshape(-1), side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1)
    flips = np.bincount(idx, weights=flipped.reshape(-1).astype(np.float64), minlength=len(edges) - 1)
    return counts.astype(np.int64), flips.astype(np.int64)


@dataclass
class CompareCounts:
    """Running sums per domain and layer; `update` takes one block of aligned rows."""

    num_domains: int
    num_layers: int
    top_k: int
    tokens: np.ndarray = field(init=False)  # (D,)
    first: np.ndarray = field(init=False)  # (D, L) first choices equal
    overlap: np.ndarray = field(init=False)  # (D, L) sum of |A ∩ B|
    set_equal: np.ndarray = field(init=False)  # (D, L)
    differs: np.ndarray = field(init=False)  # (D,) tokens differing in some layer
    margin_counts: np.ndarray = field(init=False)
    margin_flips: np.ndarray = field(init=False)

    def __post_init__(self):
        D, L = self.num_domains, self.num_layers
        self.tokens = np.zeros(D, np.int64)
        self.first, self.overlap, self.set_equal = (np.zeros((D, L), np.int64) for _ in range(3))
        self.differs = np.zeros(D, np.int64)
        self.margin_counts = np.zeros(len(MARGIN_EDGES) - 1, np.int64)
        self.margin_flips = np.zeros(len(MARGIN_EDGES) - 1, np.int64)

    def update(
        self, a: np.ndarray, b: np.ndarray, domain: np.ndarray, margin: np.ndarray | None = None, flip_of: str = "set"
    ) -> None:
        """`a`, `b` (n, L, k) aligned ids; `domain` (n,) codes; `margin` (n, L) or None."""
        D = self.num_domains
        inter = choice_overlap(a, b)  # (n, L)
        same_set = inter == self.top_k
        same_first = a[..., 0] == b[..., 0]

        def by_domain(values: np.ndarray) -> np.ndarray:  # (n, L) -> (D, L) sums
            out = np.zeros((D, values.shape[1]), np.int64)
            np.add.at(out, domain, values.astype(np.int64))
            return out

        self.tokens += np.bincount(domain, minlength=D)
        self.first += by_domain(same_first)
        self.overlap += by_domain(inter)
        self.set_equal += by_domain(same_set)
        self.differs += np.bincount(domain, weights=(~same_set).any(1), minlength=D).astype(np.int64)
        if margin is not None:
            counts, flips = margin_bins(margin, ~same_set if flip_of == "set" else ~same_first)
            self.margin_counts += counts
            self.margin_flips += flips
