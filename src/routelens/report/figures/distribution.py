"""Figures of the expert distribution per domain (Mixtral Fig. 7/10: grouped bars per expert and
domain with the uniform line) and of the Jensen-Shannon divergence between domains per layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from routelens.report.colors import DOMAIN_COLORS, domain_color
from routelens.report.figures.base import BASELINE, expert_ticks, floats, grid, layer_axis, legend
from routelens.report.figures_io import new_figure, style


def distribution_figure(
    distribution: dict,
    layers: Sequence[str],
    domains: Sequence[str],
    num_experts: int,
    *,
    uniform: float,
    ylabel: str = "share of assignments",
) -> Figure:
    """Bars per expert, one colour per domain, a panel per layer, the uniform share dashed."""
    with style():
        fig, axes = grid(len(layers), sharey=True)
        x = np.arange(num_experts)
        nd = len(domains)
        use_bars = num_experts * nd <= 160  # beyond that, bars are thinner than a pixel
        width = 0.84 / nd
        for ax, layer in zip(axes, layers):
            for i, d in enumerate(domains):
                y = floats(distribution[d][layer])  # (E,)
                color = domain_color(domains, d)
                if use_bars:
                    ax.bar(x - 0.42 + width * (i + 0.5), y, width, color=color, label=d, linewidth=0)
                else:
                    ax.step(x, y, where="mid", color=color, lw=0.9, label=d)
            ax.axhline(uniform, **BASELINE, label="uniform")
            ax.set_title(f"layer {layer}")
            expert_ticks(ax, num_experts)
        # Shared y: set once every panel is drawn, or the first panel's limits would clip the rest.
        top = max(
            uniform, max((np.nanmax(floats(distribution[d][layer])) for d in domains for layer in layers), default=0.0)
        )
        axes[0].set_ylim(0, top * 1.06)
        fig.supxlabel("expert", fontsize=9)
        fig.supylabel(ylabel, fontsize=9)
        legend(fig, axes, nd + 1)
    return fig


def js_layer_figure(pairs_by_layer: dict[str, list[dict]], layers: Sequence[str]) -> Figure:
    """Jensen-Shannon divergence per domain pair against the layer, with bootstrap bands."""
    x = [int(layer) for layer in layers]
    names = [(p["a"], p["b"]) for p in pairs_by_layer[layers[0]]]
    with style():
        fig = new_figure(7.2, 2.9)
        ax = fig.subplots()
        for i, (a, b) in enumerate(names):
            rows = [next(p for p in pairs_by_layer[layer] if (p["a"], p["b"]) == (a, b)) for layer in layers]
            color = DOMAIN_COLORS[i % len(DOMAIN_COLORS)]
            ax.plot(x, floats(r["js"] for r in rows), "-o", ms=2.5, lw=1.2, color=color, label=f"{a} – {b}")
            if all(r.get("ci_low") is not None and r.get("ci_high") is not None for r in rows):
                ax.fill_between(
                    x,
                    floats(r["ci_low"] for r in rows),
                    floats(r["ci_high"] for r in rows),
                    color=color,
                    alpha=0.12,
                    lw=0,
                )
        layer_axis(ax)
        ax.set_ylabel("Jensen-Shannon divergence")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
