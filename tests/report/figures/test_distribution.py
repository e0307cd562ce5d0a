"""The distribution and domain-distance figures draw the numbers they are given: bar heights and
curves read back from the artists."""

from __future__ import annotations

import numpy as np

from routelens.report.figures.distribution import distribution_figure, js_layer_figure

LAYERS = ["0", "3", "7"]


def planted_distribution(domains, E, seed=0):
    rng = np.random.default_rng(seed)
    return {d: {layer: rng.dirichlet(np.ones(E)).tolist() for layer in LAYERS} for d in domains}


def test_distribution_bars_per_layer_domain_and_expert():
    dist = planted_distribution(["code", "prose"], 8)
    fig = distribution_figure(dist, LAYERS, ["code", "prose"], 8, uniform=1 / 8)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [f"layer {x}" for x in LAYERS]
    for ax, layer in zip(axes, LAYERS):
        heights = [p.get_height() for p in ax.patches]  # domains one after another, experts in order
        np.testing.assert_allclose(heights, dist["code"][layer] + dist["prose"][layer])
        assert any(np.allclose(line.get_ydata(), 1 / 8) for line in ax.lines)  # the uniform line
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["code", "prose", "uniform"]


def test_distribution_many_experts_switches_to_steps():
    dist = planted_distribution(["a", "b", "c"], 64)
    fig = distribution_figure(dist, LAYERS, ["a", "b", "c"], 64, uniform=1 / 64)
    ax = fig.axes[0]
    assert not ax.patches
    np.testing.assert_allclose(ax.lines[1].get_ydata(), dist["b"]["0"])


def test_js_layer_band_only_with_intervals():
    pairs = {layer: [{"a": "x", "b": "y", "js": 0.1, "ci_low": 0.05, "ci_high": 0.2}] for layer in LAYERS}
    with_band = js_layer_figure(pairs, LAYERS)
    assert len(with_band.axes[0].collections) == 1
    no_ci = {layer: [{"a": "x", "b": "y", "js": 0.1, "ci_low": None, "ci_high": None}] for layer in LAYERS}
    assert len(js_layer_figure(no_ci, LAYERS).axes[0].collections) == 0
