"""Figure of the expert-cache simulation: hit rate against cache capacity per policy, a panel per
layer, with the shuffled-order control dotted (what is left without positional locality)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures_io import new_figure, style


def cache_figure(cache: dict, shuffled: dict, layers: Sequence[str]) -> Figure:
    """`cache` {policy: {layer: {capacity: hit_rate}}}; `shuffled` the same for the control."""
    with style():
        fig = new_figure(min(3.2 * len(layers), 12.5) + 0.4, 2.8)
        axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
        for ax, layer in zip(axes, layers):
            for i, (policy, by_layer) in enumerate(cache.items()):
                curve = sorted((int(c), float(h)) for c, h in by_layer[layer].items())
                color = DOMAIN_COLORS[i % len(DOMAIN_COLORS)]
                ax.plot(*zip(*curve), "-o", ms=2.5, lw=1.2, color=color, label=policy)
                if layer in shuffled.get(policy, {}):
                    control = sorted((int(c), float(h)) for c, h in shuffled[policy][layer].items())
                    ax.plot(*zip(*control), ":", lw=1.0, color=color)
            if shuffled:
                ax.plot([], [], ":", color="#6b7079", label="shuffled order")
            ax.set_title(f"layer {layer}")
            ax.set_xlabel("cache capacity (experts)")
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes[0].set_ylabel("hit rate")
        axes[-1].legend(loc="lower right")
    return fig
