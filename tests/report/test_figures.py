"""The figures draw the numbers they are given: bar heights, curves and cells read back from the artists."""

from __future__ import annotations

import numpy as np

from routelens.report import figures as F

LAYERS = ["0", "3", "7"]


def planted_distribution(domains, E, seed=0):
    rng = np.random.default_rng(seed)
    return {d: {layer: rng.dirichlet(np.ones(E)).tolist() for layer in LAYERS} for d in domains}


def test_distribution_bars_per_layer_domain_and_expert():
    dist = planted_distribution(["code", "prose"], 8)
    fig = F.distribution_figure(dist, LAYERS, ["code", "prose"], 8, uniform=1 / 8)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [f"layer {x}" for x in LAYERS]
    for ax, layer in zip(axes, LAYERS):
        heights = [p.get_height() for p in ax.patches]  # domains one after another, experts in order
        np.testing.assert_allclose(heights, dist["code"][layer] + dist["prose"][layer])
        assert any(np.allclose(line.get_ydata(), 1 / 8) for line in ax.lines)  # the uniform line
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["code", "prose", "uniform"]


def test_distribution_many_experts_switches_to_steps():
    dist = planted_distribution(["a", "b", "c"], 64)
    fig = F.distribution_figure(dist, LAYERS, ["a", "b", "c"], 64, uniform=1 / 64)
    ax = fig.axes[0]
    assert not ax.patches
    np.testing.assert_allclose(ax.lines[1].get_ydata(), dist["b"]["0"])


def test_locality_curves_and_k1_single_panel():
    loc = {"a": {layer: {"first": 0.1 * (i + 1), "any": 0.5 + 0.1 * i} for i, layer in enumerate(LAYERS)}}
    loc["a"]["3"]["first"] = None  # undefined values become gaps, not errors
    perm = {"a": {layer: {"first": 0.12, "any": 0.47} for layer in LAYERS}}
    base = {"first": 0.125, "any": 0.4643}
    fig = F.locality_layer_figure(loc, perm, base, LAYERS, ["a"], top_k=2)
    first_ax, any_ax = [ax for ax in fig.axes if ax.get_visible()]
    np.testing.assert_allclose(first_ax.lines[0].get_xdata(), [0, 3, 7])
    np.testing.assert_allclose(first_ax.lines[0].get_ydata(), [0.1, np.nan, 0.3])
    np.testing.assert_allclose(any_ax.lines[0].get_ydata(), [0.5, 0.6, 0.7])
    np.testing.assert_allclose(any_ax.lines[1].get_ydata(), [0.47] * 3)  # permuted
    one = F.locality_layer_figure(loc, None, base, LAYERS, ["a"], top_k=1)
    assert len([ax for ax in one.axes if ax.get_visible()]) == 1


def test_heatmap_cells_and_blank_diagonal():
    m = np.arange(9, dtype=float).reshape(3, 3)
    m[np.diag_indices(3)] = np.nan
    fig = F.heatmap_grid({"0": m, "7": m * 2}, ["x", "y", "z"], title="")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    np.testing.assert_array_equal(images[1].get_array().filled(np.nan), m * 2)
    assert images[0].get_clim() == images[1].get_clim() == (0.0, 14.0)  # one shared scale, NaN ignored


def test_js_layer_band_only_with_intervals():
    pairs = {layer: [{"a": "x", "b": "y", "js": 0.1, "ci_low": 0.05, "ci_high": 0.2}] for layer in LAYERS}
    with_band = F.js_layer_figure(pairs, LAYERS)
    assert len(with_band.axes[0].collections) == 1
    no_ci = {layer: [{"a": "x", "b": "y", "js": 0.1, "ci_low": None, "ci_high": None}] for layer in LAYERS}
    assert len(F.js_layer_figure(no_ci, LAYERS).axes[0].collections) == 0
