"""The locality figures draw the values they are given, with gaps for nulls and one panel at k = 1."""

from __future__ import annotations

import numpy as np

from routelens.report.figures.locality import locality_layer_figure

LAYERS = ["0", "3", "7"]


def test_locality_curves_and_k1_single_panel():
    loc = {"a": {layer: {"first": 0.1 * (i + 1), "any": 0.5 + 0.1 * i} for i, layer in enumerate(LAYERS)}}
    loc["a"]["3"]["first"] = None  # undefined values become gaps, not errors
    perm = {"a": {layer: {"first": 0.12, "any": 0.47} for layer in LAYERS}}
    base = {"first": 0.125, "any": 0.4643}
    fig = locality_layer_figure(loc, perm, base, LAYERS, ["a"], top_k=2)
    first_ax, any_ax = [ax for ax in fig.axes if ax.get_visible()]
    np.testing.assert_allclose(first_ax.lines[0].get_xdata(), [0, 3, 7])
    np.testing.assert_allclose(first_ax.lines[0].get_ydata(), [0.1, np.nan, 0.3])
    np.testing.assert_allclose(any_ax.lines[0].get_ydata(), [0.5, 0.6, 0.7])
    np.testing.assert_allclose(any_ax.lines[1].get_ydata(), [0.47] * 3)  # permuted
    one = locality_layer_figure(loc, None, base, LAYERS, ["a"], top_k=1)
    assert len([ax for ax in one.axes if ax.get_visible()]) == 1
