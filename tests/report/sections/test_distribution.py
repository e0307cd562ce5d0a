"""The domain-distance fallback (an analysis without `domain_distance`): the analysis' own
Jensen-Shannon divergence between the domains' distributions, against closed forms."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest

from routelens.analysis.distribution import js_divergence
from routelens.report.sections.distribution import js_matrix


def test_js_matrix_is_symmetric_with_zero_diagonal():
    dist = {"a": {"0": [1, 0]}, "b": {"0": [0, 1]}, "c": {"0": [1, 0]}}
    m = js_matrix(dist, ["a", "b", "c"], "0")
    np.testing.assert_allclose(m, [[0, 1, 0], [1, 0, 1], [0, 1, 0]], atol=1e-12)


def test_js_matrix_closed_forms_and_counts_normalised():
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    expected = 0.5 * log2(4 / 3) + 0.5 * (0.5 * log2(2 / 3) + 0.5 * log2(2))
    dist = {"p": {"3": [1, 0]}, "q": {"3": [0.5, 0.5]}, "counts": {"3": [7, 7]}}
    m = js_matrix(dist, ["p", "q", "counts"], "3")
    assert m[0, 1] == pytest.approx(expected)
    assert m[0, 2] == pytest.approx(expected)  # counts are normalised first
    assert m[1, 2] == pytest.approx(0.0, abs=1e-12)
    assert m[0, 1] == pytest.approx(float(js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5]))))
