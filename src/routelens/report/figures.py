"""The report's figures of the Mixtral / OLMoE routing analyses, as matplotlib Figures.

Each function takes parts of the analysis dict (layers are strings of true layer indices, as in
the JSON) and returns a Figure; `FigureSink` turns it into inline SVG and PNG/PDF copies. Layouts
follow the papers: grouped bars per expert and domain with the uniform line (Mixtral Fig. 7/10),
locality against the layer with its baselines (Mixtral Table 5 as a curve), heatmaps for the
Jensen-Shannon distances and for co-activation (OLMoE).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from routelens.report.figures_io import new_figure, style
from routelens.report.numbers import DOMAIN_COLORS, domain_color

BASELINE = dict(color="#6b7079", ls="--", lw=0.9)
REFERENCE_LABELS = {"uniform", "random", "positions permuted", "random (first)"}


def floats(values) -> np.ndarray:
    """A list from the JSON (nulls where undefined) as a float array with NaN for null."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _grid(n: int, *, ncols: int = 4, panel=(2.7, 1.9), extra_h: float = 0.7, **kw):
    ncols = max(1, min(ncols, n))
    nrows = ceil(n / ncols)
    fig = new_figure(panel[0] * ncols + 0.5, panel[1] * nrows + extra_h)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _expert_ticks(ax, num_experts: int) -> None:
    step = 1 if num_experts <= 16 else int(np.ceil(num_experts / 8))
    ax.set_xticks(np.arange(0, num_experts, step))
    ax.set_xlim(-0.6, num_experts - 0.4)


def _layer_axis(ax) -> None:
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(fig: Figure, axes, ncol: int) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    # Domains first, reference lines (dashed / dotted) after them.
    order = sorted(range(len(labels)), key=lambda i: labels[i] in REFERENCE_LABELS)
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=max(1, min(ncol, 8)))


def distribution_figure(
    distribution: dict, layers: Sequence[str], domains: Sequence[str], num_experts: int, *,
    uniform: float, ylabel: str = "share of assignments",
) -> Figure:  # fmt: skip
    """Bars per expert, one colour per domain, a panel per layer, the uniform share dashed."""
    with style():
        fig, axes = _grid(len(layers), sharey=True)
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
            _expert_ticks(ax, num_experts)
        # Shared y: set once every panel is drawn, or the first panel's limits would clip the rest.
        top = max(uniform, max((np.nanmax(floats(distribution[d][layer])) for d in domains for layer in layers), default=0.0))
        axes[0].set_ylim(0, top * 1.06)
        fig.supxlabel("expert", fontsize=9)
        fig.supylabel(ylabel, fontsize=9)
        _legend(fig, axes, nd + 1)
    return fig


def locality_layer_figure(
    locality: dict, permuted: dict | None, baseline: dict, layers: Sequence[str], domains: Sequence[str], top_k: int
) -> Figure:
    """`first` and `any` against the layer, per domain; permuted (dotted) and random (dashed)."""
    kinds = [("first", "same first expert")] + ([("any", f"top-{top_k} sets share an expert")] if top_k > 1 else [])
    x = [int(layer) for layer in layers]
    with style():
        fig, axes = _grid(len(kinds), ncols=2, panel=(4.6, 2.7), sharey=False)
        for ax, (kind, title) in zip(axes, kinds):
            for d in domains:
                color = domain_color(domains, d)
                ax.plot(x, floats(locality[d][layer][kind] for layer in layers), "-o", ms=2.5, lw=1.2, color=color, label=d)
                if permuted and d in permuted:
                    ax.plot(x, floats(permuted[d][layer][kind] for layer in layers), ":", lw=1.0, color=color)
            ax.axhline(baseline[kind], **BASELINE, label="random")
            ax.plot([], [], ":", color="#6b7079", label="positions permuted")
            ax.set_title(title)
            _layer_axis(ax)
            ax.set_ylabel("share of consecutive tokens")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _legend(fig, axes, len(domains) + 2)
    return fig


def locality_distance_figure(
    locality_distance: dict, layers: Sequence[str], domains: Sequence[str], baseline: dict, top_k: int
) -> Figure:
    """Locality of tokens d apart (d = 1..D), a panel per layer: solid `first`, dashed `any`."""
    with style():
        fig, axes = _grid(len(layers), ncols=min(4, len(layers)), panel=(3.0, 2.2), sharey=True)
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
        _legend(fig, axes, len(domains) + 1)
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
                ax.fill_between(x, floats(r["ci_low"] for r in rows), floats(r["ci_high"] for r in rows), color=color, alpha=0.12, lw=0)
        _layer_axis(ax)
        ax.set_ylabel("Jensen-Shannon divergence")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def heatmap_grid(
    matrices: dict[str, np.ndarray], labels: Sequence[str], *, title: str, cmap: str = "Blues",
    annotate: bool = True, fmt: str = "{:.3f}", axis_labels=("", ""), vmax: float | None = None,
) -> Figure:  # fmt: skip
    """One heatmap per layer with a shared colour scale (NaN cells left blank)."""
    layers = list(matrices)
    n = len(labels)
    side = min(3.2, max(1.9, 0.32 * n + 1.0))
    finite = [m[np.isfinite(m)] for m in matrices.values()]
    top = vmax if vmax is not None else max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0
    with style():
        fig, axes = _grid(len(layers), ncols=4, panel=(side, side), extra_h=0.5)
        image = None
        for ax, layer in zip(axes, layers):
            m = np.asarray(matrices[layer], dtype=float)
            image = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
            ax.grid(False)
            ax.set_title(f"{title} · layer {layer}" if title else f"layer {layer}")
            ticks = np.arange(n) if n <= 16 else np.arange(0, n, int(np.ceil(n / 8)))
            slanted = any(not str(label).isdigit() for label in labels)  # names slant, numbers stand
            ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=45 if slanted else 0, ha="right" if slanted else "center")
            ax.set_yticks(ticks, [labels[t] for t in ticks])
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
            if annotate and n <= 8:
                for (i, j), v in np.ndenumerate(m):
                    if np.isfinite(v):
                        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6.5,
                                color="white" if v > 0.6 * top else "#1d2127")  # fmt: skip
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    return fig


def vocabulary_figure(series: dict[str, dict[str, float]], layers: Sequence[str], *, chance: float | None) -> Figure:
    """Vocabulary specialization against the layer: one line per series (input / next tokens)."""
    x = [int(layer) for layer in layers]
    with style():
        fig = new_figure(6.2, 2.7)
        ax = fig.subplots()
        for (label, values), marker, ls in zip(series.items(), "os^", ("-", "--", ":")):
            ax.plot(x, floats(values[layer] for layer in layers), ls, marker=marker, ms=3, lw=1.2, label=label)
        if chance is not None:
            ax.axhline(chance, **BASELINE, label="uniform routing")
        _layer_axis(ax)
        ax.set_ylabel("share to its top expert")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def histogram_grid(hists: dict[str, tuple[np.ndarray, np.ndarray]], *, xlabel: str, title: str) -> Figure:
    """Histograms given as (bin edges (B+1,), counts (B,)) per layer, a panel per layer."""
    layers = list(hists)
    with style():
        fig, axes = _grid(len(layers), panel=(2.6, 1.8), sharey=False)
        for ax, layer in zip(axes, layers):
            edges, counts = (np.asarray(a, dtype=float) for a in hists[layer])
            total = counts.sum() or 1.0
            ax.stairs(counts / total, edges, fill=True, color="#4c72b0", alpha=0.85)
            ax.set_title(f"{title} · layer {layer}")
        fig.supxlabel(xlabel, fontsize=9)
        fig.supylabel("share of tokens", fontsize=9)
    return fig
