"""Expert co-activation (OLMoE): how often expert j is in the top-k when expert i is.

C[i, j] = N(i and j both selected) / N(i selected), per layer, over **all pairs of choices within
a token's top-k** (k(k-1)/2 pairs per token). The **adjacent-rank** variant counts only pairs of
consecutive ranks (the r-th and (r+1)-th choice: k-1 pairs per token), the variant asked for to
compare with OLMoE's published co-activation numbers; for k = 2 the two are the same. The
diagonal is left at 0 (N(i and i) / N(i) = 1 says nothing and would dominate a heatmap's colour
scale).
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.row_kernels import count_coactivation


class CoactivationAccumulator:
    def __init__(self, num_layers: int, num_experts: int):
        self.L, self.E = num_layers, num_experts
        self.k = 0  # choices per token (from the first update)
        # pairs of choice ranks s < t counted one way ([a at s, b at t]); both ways = ranked + ranked^T
        self._ranked = np.zeros((num_layers, num_experts, num_experts), dtype=np.int64)  # (L, E, E)
        self.selected = np.zeros((num_layers, num_experts), dtype=np.int64)  # (L, E)
        self._adjacent = np.zeros((num_layers, num_experts, num_experts), dtype=np.int64)  # ranks r, r + 1 (k > 2)

    def update(self, experts: np.ndarray | None = None, *, et: np.ndarray | None = None) -> None:
        """experts (n, L, k), or `et` = the same as (k, L, n); counted by a compiled kernel, layers in parallel."""
        experts = et.transpose(2, 1, 0) if experts is None else experts
        self.k = max(self.k, experts.shape[2])
        count_coactivation(np.ascontiguousarray(experts), self._ranked, self._adjacent, self.selected)

    @property
    def both(self) -> np.ndarray:
        """(L, E, E) N(i and j) over all pairs of choices, both orders."""
        return self._ranked + self._ranked.transpose(0, 2, 1)

    @property
    def adjacent(self) -> np.ndarray:
        """(L, E, E) the same over pairs of consecutive ranks (for k <= 2: every pair)."""
        pairs = self._adjacent if self.k > 2 else self._ranked
        return pairs + pairs.transpose(0, 2, 1)

    def result(self, *, adjacent: bool = False) -> np.ndarray:
        """(L, E, E) C[l, i, j] = N(i and j) / N(i) over all pairs of choices (adjacent: pairs of
        consecutive ranks only); rows of unselected experts are 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (self.adjacent if adjacent else self.both) / self.selected[:, :, None]
        out = np.nan_to_num(out, nan=0.0)
        idx = np.arange(self.E)
        out[:, idx, idx] = 0.0
        return out
