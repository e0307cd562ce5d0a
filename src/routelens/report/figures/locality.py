"""Figures of positional locality (Mixtral Table 5 as curves): the same-expert share of consecutive
tokens against the layer with its permuted and random baselines, and against the distance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import domain_color
from routelens.report.figures.base import BASELINE, floats, grid, layer_axis, legend
from routelens.report.figures_io import style


def locality_layer_figure(
    locality: dict, permuted: dict | None, baseline: dict, layers: Sequence[str], domains: Sequence[str], top_k: int
) -> Figure:
    """`first` and `any` against the layer, per domain; permuted (dotted) and random (dashed)."""
    kinds = [("first", "same first expert")] + ([("any", f"top-{top_k} sets share an expert")] if top_k > 1 else [])
    x = [int(layer) for layer in layers]
    with style():
        fig, axes = grid(len(kinds), ncols=2, panel=(4.6, 2.7), sharey=False)
        for ax, (kind, title) in zip(axes, kinds):
            for d in domains:
                color = domain_color(domains, d)
                ax.plot(
                    x, floats(locality[d][layer][kind] for layer in layers), "-o", ms=2.5, lw=1.2, color=color, label=d
                )
                if permuted and d in permuted:
                    ax.plot(x, floats(permuted[d][layer][kind] for layer in layers), ":", lw=1.0, color=color)
            ax.axhline(baseline[kind], **BASELINE, label="random")
            ax.plot([], [], ":", color="#6b7079", label="positions permuted")
            ax.set_title(title)
            layer_axis(ax)
            ax.set_ylabel("share of consecutive tokens")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        legend(fig, axes, len(domains) + 2)
    return fig


def locality_distance_figure(
    locality_distance: dict, layers: Sequence[str], domains: Sequence[str], baseline: dict, top_k: int
) -> Figure:
    """Locality of tokens d apart (d = 1..D), a panel per layer: solid `first`, dashed `any`."""
    with style():
        fig, axes = grid(len(layers), ncols=min(4, len(layers)), panel=(3.0, 2.2), sharey=True)
        for ax, layer in zip(axes, layers):
            for d in domains:
                color = domain_color(domains, d)
                first = floats(locality_distance[d][layer]["first"])
                dist = np.arange(1, len(first) + 1)
                ax.plot(dist, first, "-", lw=1.1, color=color, label=d)
                if top_k > 1 and "any" in locality_distance[d][layer]:
                    ax.plot(dist, floats(locality_distance[d][layer]["any"]), "--", lw=0.9, color=color)
            ax.axhline(baseline["first"], color="#6b7079", lw=0.8, ls=(0, (1, 2)), label="random (first)")
            ax.set_xscale("log", base=2)
            ax.set_title(f"layer {layer}")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        fig.supxlabel("distance d between tokens (log scale)", fontsize=9)
        fig.supylabel("share with the same expert", fontsize=9)
        legend(fig, axes, len(domains) + 1)
    return fig
