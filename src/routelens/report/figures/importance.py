"""Figure of expert importance (`routelens importance`): per layer and expert, each criterion
relative to the layer's mean expert, and how much of a layer's assignments its N most used experts
take, the curve a pruning budget is read from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.colors import DOMAIN_COLORS
from routelens.report.figures.base import BASELINE, expert_ticks
from routelens.report.figures_io import new_figure, style


def relative(values: np.ndarray) -> np.ndarray:
    """(L, E) scores over each layer's mean (1 = an average expert; NaN for an all-zero layer)."""
    mean = values.mean(axis=1, keepdims=True)
    return np.divide(values, mean, out=np.full_like(values, np.nan), where=mean > 0)


def coverage(frequency: np.ndarray) -> np.ndarray:
    """(L, E) shares -> (L, E) share of assignments taken by the 1, 2, ..., E most used experts."""
    return np.cumsum(-np.sort(-frequency, axis=1), axis=1)


def importance_figure(overall: dict, layers: Sequence[str], criteria: Sequence[str]) -> Figure:
    """A heatmap per criterion (layers x experts, relative to the layer's mean) and the coverage curves."""
    scores = {c: np.array([overall[c][layer] for layer in layers], dtype=float) for c in criteria}
    L, E = scores[criteria[0]].shape
    with style():
        fig = new_figure(3.0 * len(criteria) + 3.4, max(2.4, 0.22 * L + 1.4))
        axes = fig.subplots(1, len(criteria) + 1, width_ratios=[1.0] * len(criteria) + [1.15])
        top = max(2.0, float(np.nanmax([np.nanmax(relative(v)) for v in scores.values()])))
        image = None
        for ax, criterion in zip(axes, criteria):
            image = ax.imshow(
                relative(scores[criterion]), cmap="viridis", vmin=0.0, vmax=top, aspect="auto", interpolation="nearest"
            )
            ax.grid(False)
            ax.set_title(criterion)
            expert_ticks(ax, E)
            ax.set_xlabel("expert")
            ax.set_yticks(
                np.arange(L),
                list(layers) if L <= 16 else [layers[i] if i % max(1, L // 8) == 0 else "" for i in range(L)],
            )
        axes[0].set_ylabel("layer")
        fig.colorbar(image, ax=list(axes[: len(criteria)]), shrink=0.9, label="x the layer's mean expert")
        ax = axes[-1]
        curves = coverage(scores["frequency"])
        n = np.arange(1, E + 1)
        for i, layer in enumerate(layers):
            ax.plot(n, curves[i], "-", lw=1.1, color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=f"layer {layer}")
        ax.plot(n, n / E, **BASELINE, label="uniform")
        ax.set_xlabel("experts kept (most used first)")
        ax.set_ylabel("assignments they take")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(loc="lower right", fontsize=6, ncol=1 + L // 10)
    return fig
