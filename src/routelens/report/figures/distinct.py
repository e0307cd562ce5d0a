"""Figure of distinct experts per batch (`routelens simulate distinct`): per layer, the mean number
of experts one batch touches, for B consecutive tokens and for B sequences decoding together,
against the uniform-routing chance line. Below the line, batches share experts (locality)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures.base import BASELINE, floats, layer_axis
from routelens.report.figures_io import new_figure, style


def distinct_figure(curves: dict[str, dict], layers: Sequence[str], num_experts: int, chance: float | None) -> Figure:
    """`curves` {label: {layer: {"mean": distinct experts, ...}}}, drawn over `layers` (true layer
    indices as strings); a layer a curve lacks is a gap. `chance` the uniform-routing mean, or None."""
    x = np.array([int(layer) for layer in layers])
    with style():
        fig = new_figure(5.6, 2.7)
        ax = fig.subplots()
        for i, (label, by_layer) in enumerate(curves.items()):
            y = floats([(by_layer.get(layer) or {}).get("mean") for layer in layers])
            ax.plot(x, y, "-o", ms=3, lw=1.2, color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=label)
        if chance is not None:
            ax.axhline(float(chance), **BASELINE, label="uniform routing")
        layer_axis(ax)
        ax.set_ylabel("distinct experts per batch")
        ax.set_ylim(0, num_experts * 1.04)
        ax.legend(loc="lower right")
    return fig
