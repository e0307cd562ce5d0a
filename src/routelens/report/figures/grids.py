"""Generic per-layer panels several report sections share: heatmaps with one colour scale (domain
distances, co-activation) and histograms (router confidence)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from routelens.report.figures.base import grid
from routelens.report.figures_io import style


def heatmap_grid(
    matrices: dict[str, np.ndarray],
    labels: Sequence[str],
    *,
    title: str,
    cmap: str = "Blues",
    annotate: bool = True,
    fmt: str = "{:.3f}",
    axis_labels=("", ""),
    vmax: float | None = None,
) -> Figure:
    """One heatmap per layer with a shared colour scale (NaN cells left blank)."""
    layers = list(matrices)
    n = len(labels)
    side = min(3.2, max(1.9, 0.32 * n + 1.0))
    finite = [m[np.isfinite(m)] for m in matrices.values()]
    top = vmax if vmax is not None else max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0
    with style():
        fig, axes = grid(len(layers), ncols=4, panel=(side, side), extra_h=0.5)
        image = None
        for ax, layer in zip(axes, layers):
            m = np.asarray(matrices[layer], dtype=float)
            image = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
            ax.grid(False)
            ax.set_title(f"{title} · layer {layer}" if title else f"layer {layer}")
            ticks = np.arange(n) if n <= 16 else np.arange(0, n, int(np.ceil(n / 8)))
            slanted = any(not str(label).isdigit() for label in labels)  # names slant, numbers stand
            ax.set_xticks(
                ticks, [labels[t] for t in ticks], rotation=45 if slanted else 0, ha="right" if slanted else "center"
            )
            ax.set_yticks(ticks, [labels[t] for t in ticks])
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
            if annotate and n <= 8:
                for (i, j), v in np.ndenumerate(m):
                    if np.isfinite(v):
                        ax.text(
                            j,
                            i,
                            fmt.format(v),
                            ha="center",
                            va="center",
                            fontsize=6.5,
                            color="white" if v > 0.6 * top else "#1d2127",
                        )
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    return fig


def histogram_grid(hists: dict[str, tuple[np.ndarray, np.ndarray]], *, xlabel: str, title: str) -> Figure:
    """Histograms given as (bin edges (B+1,), counts (B,)) per layer, a panel per layer."""
    layers = list(hists)
    with style():
        fig, axes = grid(len(layers), panel=(2.6, 1.8), sharey=False)
        for ax, layer in zip(axes, layers):
            edges, counts = (np.asarray(a, dtype=float) for a in hists[layer])
            total = counts.sum() or 1.0
            ax.stairs(counts / total, edges, fill=True, color="#4c72b0", alpha=0.85)
            ax.set_title(f"{title} · layer {layer}")
        fig.supxlabel(xlabel, fontsize=9)
        fig.supylabel("share of tokens", fontsize=9)
    return fig
