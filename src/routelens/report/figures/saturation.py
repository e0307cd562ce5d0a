"""Figure of router saturation (OLMoE): each training checkpoint's agreement with the final
model's routing on the same tokens, per layer, against the agreement of random routing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures.base import BASELINE
from routelens.report.figures_io import new_figure, style


def saturation_figure(
    result: dict, labels: Sequence[str], layers: Sequence[str], kinds: Sequence[tuple[str, str]]
) -> Figure:
    """A panel per agreement kind (`topk`, `top1`) of `result`, a curve per layer over `labels`."""
    baseline = result.get("baseline") or {}
    x = np.arange(len(labels))
    with style():
        fig = new_figure(4.4 * len(kinds) + 0.4, 2.9)
        axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
        for ax, (kind, title) in zip(axes, kinds):
            for i, layer in enumerate(layers):
                ax.plot(
                    x,
                    [float(v) for v in result[kind][layer]],
                    "-o",
                    ms=2.5,
                    lw=1.2,
                    color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)],
                    label=f"layer {layer}",
                )
            if baseline.get(kind) is not None:
                ax.axhline(float(baseline[kind]), **BASELINE, label="random")
            ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(title)
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes[0].set_ylabel("agreement with the final checkpoint")
        axes[-1].legend(loc="lower right", ncol=1 + len(layers) // 8)
    return fig
