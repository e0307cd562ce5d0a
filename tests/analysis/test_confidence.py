"""Router confidence histograms against numpy's histogram and closed-form entropies."""

from __future__ import annotations

import numpy as np
import pytest

from routelens.analysis.confidence import BINS, ConfidenceAccumulator, entropy_bits


def test_entropy_closed_forms():
    E = 8
    probs = np.zeros((3, 1, E), dtype=np.float16)
    probs[0, 0] = 1 / E  # uniform: log2 E bits
    probs[1, 0, 3] = 1.0  # one-hot: 0 bits
    probs[2, 0, :2] = 0.5  # two-way: 1 bit
    np.testing.assert_allclose(entropy_bits(probs)[:, 0], [3.0, 0.0, 1.0], atol=1e-6)


def test_histograms_match_numpy_and_chunks_add_up():
    rng = np.random.default_rng(0)
    E, L, n = 8, 2, 1000
    probs = rng.dirichlet(np.full(E, 0.3), size=(n, L)).astype(np.float16)
    top = np.sort(probs.astype(np.float32), axis=-1)[..., ::-1][..., :2]
    weights = (top / top.sum(-1, keepdims=True)).astype(np.float16)  # (n, L, 2), renormalised top-2
    acc = ConfidenceAccumulator(L, E, weights=True, probs=True)
    for lo in range(0, n, 300):
        acc.update(weights[lo : lo + 300], probs[lo : lo + 300])
    for layer in range(L):
        out = acc.result(layer)
        w = weights[:, layer, 0].astype(np.float64)
        edges = np.linspace(0, 1, BINS + 1)
        assert out["top1_weight"]["counts"] == np.histogram(w, edges)[0].tolist()
        assert out["top1_weight"]["mean"] == pytest.approx(w.mean())
        h = entropy_bits(probs[:, layer : layer + 1])[:, 0]
        assert out["entropy"]["counts"] == np.histogram(h, np.linspace(0, 3, BINS + 1))[0].tolist()
        assert out["entropy"]["max"] == 3.0 and sum(out["top1_prob"]["counts"]) == n
        assert out["top1_weight"]["counts"][:10] == [0] * 10  # renormalised top-1 weight >= 1/2
