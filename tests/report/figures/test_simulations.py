"""The figures of the simulators' results (cache, balance) and of router saturation draw the values
they are given: curves read back from the artists, one panel per layer or per agreement kind."""

from __future__ import annotations

import numpy as np

from routelens.report.figures.balance import balance_figure
from routelens.report.figures.cache import cache_figure
from routelens.report.figures.saturation import saturation_figure


def test_cache_curves_per_policy_and_shuffled_control():
    cache = {
        p: {layer: {str(c): c / 8 * s for c in (4, 1, 2)} for layer in ("0", "7")}
        for p, s in (("lru", 1.0), ("belady", 0.9))
    }
    shuffled = {"lru": {"7": {"1": 0.05, "2": 0.1}}}
    fig = cache_figure(cache, shuffled, ["0", "7"])
    first, second = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["layer 0", "layer 7"]
    np.testing.assert_array_equal(first.lines[0].get_xdata(), [1, 2, 4])  # capacities sorted as numbers
    np.testing.assert_allclose(first.lines[1].get_ydata(), [0.9 / 8, 1.8 / 8, 3.6 / 8])
    np.testing.assert_allclose(second.lines[1].get_ydata(), [0.05, 0.1])  # the control, at layer 7 only
    assert [t.get_text() for t in second.get_legend().get_texts()] == ["lru", "belady", "shuffled order"]


def test_balance_dropped_share_per_placement():
    balance = {
        "round_robin": {"1.0": {"dropped": 0.2}, "2.0": {"dropped": 0.01}},
        "balanced": {"2.0": {"dropped": 0.0}},
    }
    ax = balance_figure(balance, ["1.0", "2.0"]).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1.0, 2.0])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.2, 0.01])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [2.0])  # a missing factor is skipped, not zero
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["round_robin", "balanced"]


def test_saturation_panel_per_kind_and_random_line():
    result = {
        "topk": {"0": [0.3, 0.6, 1.0], "3": [0.4, 0.8, 1.0]},
        "top1": {"0": [0.2, 0.5, 1.0], "3": [0.1, 0.4, 1.0]},
        "baseline": {"topk": 0.25},
    }
    kinds = [("topk", "top-2"), ("top1", "first")]
    fig = saturation_figure(result, ["a", "b", "final"], ["0", "3"], kinds)
    topk, top1 = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["top-2", "first"]
    np.testing.assert_allclose(topk.lines[1].get_ydata(), [0.4, 0.8, 1.0])
    np.testing.assert_allclose(top1.lines[0].get_ydata(), [0.2, 0.5, 1.0])
    assert any(np.allclose(line.get_ydata(), 0.25) for line in topk.lines)  # random routing's agreement
    assert not any(np.allclose(line.get_ydata(), 0.25) for line in top1.lines)  # no baseline given for top1
    assert [t.get_text() for t in topk.get_xticklabels()] == ["a", "b", "final"]
