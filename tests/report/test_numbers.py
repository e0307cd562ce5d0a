"""The report's fallback numbers against closed forms and brute force, and its colours."""

from __future__ import annotations

from itertools import combinations
from math import log2

import numpy as np
import pytest

from routelens.report.numbers import (
    expert_colors,
    js_divergence,
    js_matrix,
    random_locality,
    spread_layers,
    tint,
)


def test_js_divergence_closed_forms():
    assert js_divergence([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)  # disjoint supports
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    expected = 0.5 * log2(4 / 3) + 0.5 * (0.5 * log2(2 / 3) + 0.5 * log2(2))
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(expected)
    assert js_divergence([2, 6], [1, 1]) == pytest.approx(js_divergence([0.25, 0.75], [0.5, 0.5]))  # counts normalised


def test_js_matrix_is_symmetric_with_zero_diagonal():
    dist = {"a": {"0": [1, 0]}, "b": {"0": [0, 1]}, "c": {"0": [1, 0]}}
    m = js_matrix(dist, ["a", "b", "c"], "0")
    np.testing.assert_allclose(m, [[0, 1, 0], [1, 0, 1], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("E,k", [(8, 1), (8, 2), (6, 3), (16, 4)])
def test_random_locality_matches_enumeration(E, k):
    sets = [set(c) for c in combinations(range(E), k)]
    overlap = np.mean([bool(a & b) for a in sets for b in sets])
    got = random_locality(E, k)
    assert got["first"] == pytest.approx(1 / E)
    assert got["any"] == pytest.approx(overlap)


def test_random_locality_mixtral_value():
    assert random_locality(8, 2)["any"] == pytest.approx(0.4643, abs=1e-4)


def test_spread_layers():
    layers = [str(i) for i in range(32)]
    picked = spread_layers(layers, 3)
    assert picked[0] == "0" and picked[-1] == "31" and len(picked) == 3
    assert spread_layers(["0", "3"], 3) == ["0", "3"]
    assert spread_layers(layers, 8) == sorted(set(spread_layers(layers, 8)), key=int)


@pytest.mark.parametrize("E", [2, 8, 20, 64, 256])
def test_expert_colors_are_distinct(E):
    colors = expert_colors(E)
    assert len(colors) == E == len(set(colors))
    assert all(c.startswith("#") and len(c) == 7 for c in colors)


def test_tint_moves_towards_white():
    assert tint("#000000", 0.5) == "#808080"
    assert tint("#336699", 0.0) == "#336699" and tint("#336699", 1.0) == "#ffffff"
