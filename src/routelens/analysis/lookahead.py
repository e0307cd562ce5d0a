"""How well the next layers' experts can be known in advance: the trace's `lookahead` column
(`routelens trace --lookahead D`: the router of MoE layer l + d applied to layer l's router input,
the pre-gating predictor of offloading systems) against the experts layer l + d really chose, beside
the predictor that needs no model: the same layer's experts of the previous token.

For predicting layer l + d from layer l (d = 1..D), per token:
    recall = |predicted ∩ chosen| / k      exact = predicted set == chosen set
and the previous-token predictor for the same target layer l + d (consecutive tokens of one
document only). Slots holding the fill (-1: no such layer) are never counted; a token whose
prediction is all fill is left out. Each share comes with its binomial standard error over tokens
(`*_se`), which treats tokens as independent and so understates the spread of a corpus whose
documents differ: read it as a lower bound.
"""

from __future__ import annotations

import numpy as np

from routelens.analysis.pairs import pair_valid


def set_hits(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hits, exact) for (n, k) predicted and chosen ids: hits = |pred ∩ true| (n,) counting each
    chosen id once; exact where the two k-sets are equal. Ids < 0 in `pred` never match."""
    match = (pred[:, :, None] == true[:, None, :]) & (pred[:, :, None] >= 0)  # (n, k_pred, k_true)
    hits = match.any(1).sum(-1)  # (n,)
    return hits, hits == true.shape[1]


class LookaheadAccumulator:
    """Sums of hits, exact matches and predicted tokens per (layer l, distance d), for the lookahead
    predictor and the previous-token predictor of the same target layer l + d."""

    def __init__(self, num_layers: int, depth: int, top_k: int):
        self.L, self.D, self.k = num_layers, depth, top_k
        shape = (num_layers, depth)
        self.hits, self.exact, self.tokens = (np.zeros(shape, np.int64) for _ in range(3))
        self.prev_hits, self.prev_exact, self.prev_tokens = (np.zeros(shape, np.int64) for _ in range(3))
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # previous chunk's last row

    def update(self, experts: np.ndarray, lookahead: np.ndarray, doc: np.ndarray, pos: np.ndarray) -> None:
        """experts (n, L, k), lookahead (n, L, D, k) int16 (-1 fill), doc and pos (n,)."""
        experts = experts.astype(np.int64)
        if self._last is not None:  # the pair across the chunk boundary
            experts_p = np.concatenate([self._last[2], experts])
            doc_p, pos_p = np.concatenate([self._last[0], doc]), np.concatenate([self._last[1], pos])
        else:
            experts_p, doc_p, pos_p = experts, doc, pos
        consecutive = pair_valid(doc_p[:-1], pos_p[:-1], doc_p[1:], pos_p[1:], 1)  # (pairs,)
        for layer in range(self.L):
            for d in range(1, self.D + 1):
                target = layer + d
                if target >= self.L:
                    continue
                pred = lookahead[:, layer, d - 1].astype(np.int64)  # (n, k)
                has = (pred >= 0).any(-1)
                hits, exact = set_hits(pred[has], experts[has, target])
                self.hits[layer, d - 1] += hits.sum()
                self.exact[layer, d - 1] += exact.sum()
                self.tokens[layer, d - 1] += int(has.sum())
                prev, cur = experts_p[:-1, target][consecutive], experts_p[1:, target][consecutive]
                hits, exact = set_hits(prev, cur)
                self.prev_hits[layer, d - 1] += hits.sum()
                self.prev_exact[layer, d - 1] += exact.sum()
                self.prev_tokens[layer, d - 1] += len(cur)
        self._last = (doc[-1:], pos[-1:], experts[-1:])

    def result(self, layer_names: list[str]) -> dict:
        """{layer: {d: {target_layer, recall, exact, exact_se, tokens, previous_recall, previous_exact,
        previous_exact_se, previous_pairs}}},
        keyed by the predicting layer's name; None where nothing was predicted."""

        def share(num, den):
            return float(num) / den if den else None

        def se(num, den):
            return float(np.sqrt(num / den * (1 - num / den) / den)) if den else None

        out: dict = {}
        for layer, name in enumerate(layer_names):
            row = {}
            for d in range(1, self.D + 1):
                if layer + d >= self.L:
                    continue
                t, p = self.tokens[layer, d - 1], self.prev_tokens[layer, d - 1]
                row[str(d)] = {
                    "target_layer": layer_names[layer + d],
                    "recall": share(self.hits[layer, d - 1], t * self.k),
                    "exact": share(self.exact[layer, d - 1], t),
                    "exact_se": se(self.exact[layer, d - 1], t),
                    "tokens": int(t),
                    "previous_recall": share(self.prev_hits[layer, d - 1], p * self.k),
                    "previous_exact": share(self.prev_exact[layer, d - 1], p),
                    "previous_exact_se": se(self.prev_exact[layer, d - 1], p),
                    "previous_pairs": int(p),
                }
            out[name] = row
        return out
