"""Figures of a replay report (`routelens replay`): the share of token-layers routed differently in
each layer, and the difference and its cost against the router's selection margin."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures_io import new_figure, style


def differs_figure(routing_differs: dict, layers: Sequence[str]) -> Figure:
    """`routing_differs` {domain: {layer: share}}: a curve per domain over the layers."""
    x = np.arange(len(layers))
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        for i, (domain, shares) in enumerate(routing_differs.items()):
            ys = [np.nan if shares.get(layer) is None else float(shares[layer]) for layer in layers]
            ax.plot(x, ys, "-o", ms=3, lw=1.2, color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=domain)
        ax.set_xticks(x, layers, fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("token-layers routed differently")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(loc="upper left", fontsize=7)
    return fig


def margin_figure(by_margin: dict) -> Figure:
    """Share routed differently (bars) and mean KL (line, right axis) per equal-count margin bin."""
    edges, shares, kl = by_margin["edges"], by_margin["routing_differs"], by_margin["kl"]
    labels = [f"{edges[i]:.2g}–{edges[i + 1]:.2g}" for i in range(len(shares))]
    x = np.arange(len(shares))
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        ax.bar(x, [0.0 if s is None else float(s) for s in shares], color=DOMAIN_COLORS[0])
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel("selection margin (k-th minus (k+1)-th score), equal-count bins")
        ax.set_ylabel("routed differently")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        right = ax.twinx()
        right.plot(x, [np.nan if v is None else float(v) for v in kl], "-o", ms=3, color=DOMAIN_COLORS[1])
        right.set_ylabel("mean KL (own ‖ replayed)")
    return fig
