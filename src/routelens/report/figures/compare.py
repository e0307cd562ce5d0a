"""Figures of a comparison of two traces (`routelens compare`): agreement per layer, and the flip
rate against the router's margin."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures_io import new_figure, style

KINDS = (("first", "first choice equal"), ("overlap", "top-k overlap"), ("set_equal", "top-k set equal"))


def agreement_figure(by_layer: dict, layers: Sequence[str]) -> Figure:
    """`by_layer` {layer: {first, overlap, set_equal}} of one domain; a curve per kind over layers."""
    x = np.arange(len(layers))
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        for i, (key, label) in enumerate(KINDS):
            ys = [np.nan if by_layer[layer][key] is None else float(by_layer[layer][key]) for layer in layers]
            ax.plot(x, ys, "-o", ms=3, lw=1.2, color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=label)
        ax.set_xticks(x, layers, fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("share of tokens")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(loc="lower left")
    return fig


def margin_figure(by_margin: dict) -> Figure:
    """Flip rate per margin bin (bins without tokens left empty)."""
    edges, rates = by_margin["edges"], by_margin["rate"]
    labels = [f"{edges[i]:g}–{edges[i + 1]:g}" for i in range(len(rates))]
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        ax.bar(np.arange(len(rates)), [0.0 if r is None else float(r) for r in rates], color=DOMAIN_COLORS[0])
        ax.set_xticks(np.arange(len(rates)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(f"margin ({by_margin['margin']})")
        ax.set_ylabel(f"{by_margin['flip']}")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return fig
