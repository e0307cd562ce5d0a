"""Shared pieces of the report's figures: the reference-line style, JSON nulls as NaN, a grid of
per-layer panels, expert and layer axes, and a figure legend that lists domains before references."""

from __future__ import annotations

from math import ceil

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from routelens.report.figures_io import new_figure

BASELINE = dict(color="#6b7079", ls="--", lw=0.9)
REFERENCE_LABELS = {"uniform", "random", "positions permuted", "random (first)"}


def floats(values) -> np.ndarray:
    """A list from the JSON (nulls where undefined) as a float array with NaN for null."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def grid(n: int, *, ncols: int = 4, panel=(2.7, 1.9), extra_h: float = 0.7, **kw):
    """A figure of `n` panels, `ncols` to a row; unused cells are hidden."""
    ncols = max(1, min(ncols, n))
    nrows = ceil(n / ncols)
    fig = new_figure(panel[0] * ncols + 0.5, panel[1] * nrows + extra_h)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def expert_ticks(ax, num_experts: int) -> None:
    step = 1 if num_experts <= 16 else int(np.ceil(num_experts / 8))
    ax.set_xticks(np.arange(0, num_experts, step))
    ax.set_xlim(-0.6, num_experts - 0.4)


def layer_axis(ax) -> None:
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend(fig: Figure, axes, ncol: int) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    # Domains first, reference lines (dashed / dotted) after them.
    order = sorted(range(len(labels)), key=lambda i: labels[i] in REFERENCE_LABELS)
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=max(1, min(ncol, 8)))
