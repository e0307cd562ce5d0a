"""Router confidence: histograms of the first choice's weight, and where the full router
distribution was stored, of its maximum probability and entropy (bits), per layer.

Histograms have fixed edges (20 bins) so chunks add up exactly; the means are exact sums.
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.row_kernels import count_bits

BINS = 20


class Histograms:
    """Per-layer histograms of a value on fixed edges [0, top].

    float16 values (how traces store weights) are counted exactly by bit pattern: 65536 cells
    per layer, one `np.bincount` each, folded into bins and means at the end — no per-chunk
    float16 arithmetic, which numpy does slowly in software.
    """

    def __init__(self, num_layers: int, top: float):
        self.L, self.top = num_layers, float(top)
        self.counts = np.zeros((num_layers, BINS), dtype=np.int64)
        self.total = np.zeros(num_layers)
        self.n = 0
        self._f16 = np.zeros((num_layers, 1 << 16), dtype=np.int64)  # counts per float16 bit pattern
        self._result: tuple[np.ndarray, np.ndarray] | None = None  # folded counts, computed once

    def _bins(self, values: np.ndarray) -> np.ndarray:
        bins = np.minimum((values * np.float32(BINS / self.top)).astype(np.intp), BINS - 1)  # value == top -> last bin
        return np.maximum(bins, 0)

    def update(self, values: np.ndarray) -> None:
        """values (n, L)."""
        self._result = None
        if values.dtype == np.float16:
            count_bits(values.view(np.uint16), self._f16)  # (n, L) as it comes, any strides
            self.n += values.shape[0]
            return
        values = np.ascontiguousarray(values.T, dtype=np.float32)  # (L, n)
        bins = self._bins(values)
        for layer in range(self.L):
            self.counts[layer] += np.bincount(bins[layer], minlength=BINS)
        self.total += values.sum(axis=1, dtype=np.float64)
        self.n += values.shape[1]

    def _folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Bin counts and sums including the float16 cells."""
        value = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
        ok = np.isfinite(value)
        cell_bins = self._bins(np.where(ok, value, 0))
        counts = self.counts.copy()
        for layer in range(self.L):
            counts[layer] += np.bincount(cell_bins[ok], weights=self._f16[layer, ok], minlength=BINS).astype(np.int64)
        total = self.total + (self._f16[:, ok] * value[ok].astype(np.float64)).sum(axis=1)
        return counts, total

    def result(self, layer: int) -> dict:
        if self._result is None:
            self._result = self._folded()
        counts, total = self._result
        edges = np.linspace(0.0, self.top, BINS + 1)
        mean = total[layer] / self.n if self.n else None
        return {"edges": edges.tolist(), "counts": counts[layer].tolist(), "mean": mean}


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """(n, L, E) router probabilities -> (n, L) entropy in bits (renormalised: stored as float16)."""
    p = probs.astype(np.float32)
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), np.finfo(np.float32).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.maximum(-terms.sum(axis=-1), 0.0)


class ConfidenceAccumulator:
    def __init__(self, num_layers: int, num_experts: int, *, weights: bool, probs: bool):
        self.E = num_experts
        self.top1_weight = Histograms(num_layers, 1.0) if weights else None
        self.top1_prob = Histograms(num_layers, 1.0) if probs else None
        self.entropy = Histograms(num_layers, max(np.log2(num_experts), 1e-9)) if probs else None

    def update(self, weights: np.ndarray | None, probs: np.ndarray | None) -> None:
        if self.top1_weight is not None and weights is not None:
            self.top1_weight.update(weights[:, :, 0])
        if self.top1_prob is not None and probs is not None:
            self.top1_prob.update(probs.max(axis=-1))
            self.entropy.update(entropy_bits(probs))

    def result(self, layer: int) -> dict:
        out = {}
        if self.top1_weight is not None:
            out["top1_weight"] = self.top1_weight.result(layer)
        if self.top1_prob is not None:
            out["top1_prob"] = self.top1_prob.result(layer)
            out["entropy"] = {**self.entropy.result(layer), "max": float(np.log2(self.E))}
        return out
