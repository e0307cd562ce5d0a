"""The shared panels: heatmap cells as given, NaN left blank, one colour scale for every panel;
histograms as shares of their counts."""

from __future__ import annotations

import numpy as np

from routelens.report.figures.grids import heatmap_grid, histogram_grid


def test_heatmap_cells_and_blank_diagonal():
    m = np.arange(9, dtype=float).reshape(3, 3)
    m[np.diag_indices(3)] = np.nan
    fig = heatmap_grid({"0": m, "7": m * 2}, ["x", "y", "z"], title="")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    np.testing.assert_array_equal(images[1].get_array().filled(np.nan), m * 2)
    assert images[0].get_clim() == images[1].get_clim() == (0.0, 14.0)  # one shared scale, NaN ignored


def test_histograms_are_drawn_as_shares_per_layer():
    edges = np.linspace(0, 1, 5)
    hists = {"0": (edges, np.array([1, 3, 0, 4])), "7": (edges, np.array([0, 0, 2, 2]))}
    fig = histogram_grid(hists, xlabel="top-1 weight", title="w")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["w · layer 0", "w · layer 7"]
    for ax, (e, counts) in zip(axes, hists.values()):
        (stairs,) = ax.patches
        np.testing.assert_allclose(stairs.get_data().values, counts / counts.sum())
        np.testing.assert_allclose(stairs.get_data().edges, e)
