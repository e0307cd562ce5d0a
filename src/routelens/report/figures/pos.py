"""Figures of the part-of-speech analysis, drawn from the `pos` result dict alone: expert share per
tag, the layer ablation of the routing-path probe, and the t-SNE map of routing paths.

Each function takes the dict returned by `analyze_pos` (or read back from `--json`, where all
keys are strings) and returns a `matplotlib.figure.Figure` built without pyplot, so the report
can save it in any format and no global figure state leaks between calls. They live in the
report, not beside the analysis, so that the analysis package never needs matplotlib.
"""

from __future__ import annotations

import math

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def specialization_figure(pos: dict, layers: list[str] | None = None, *, columns: int = 4):
    """Heatmaps tag x expert of S(l, p, e), one panel per layer; chance (k/E) is in the title."""
    shares = pos["shares"]
    layers = [str(x) for x in (layers or list(shares))]
    tags = list(shares[layers[0]])
    E = len(shares[layers[0]][tags[0]])
    columns = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / columns)
    fig = _figure(min(3.2 * columns * max(1.0, E / 16), 24), 0.25 * len(tags) * rows + 1.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    image = None
    for ax, layer in zip(axes, layers, strict=False):
        grid = np.array([shares[layer][tag] for tag in tags], dtype=float)  # (tags, E)
        image = ax.imshow(
            grid,
            vmin=0.0,
            vmax=1.0,
            cmap="viridis",
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_yticks(range(len(tags)), tags, fontsize=7)
        step = max(1, E // 16)
        ax.set_xticks(range(0, E, step), [str(e) for e in range(0, E, step)], fontsize=7)
        ax.set_xlabel("expert", fontsize=8)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(
            image,
            ax=axes[: len(layers)].tolist(),
            label="share of the tag's tokens routed to the expert",
        )
    fig.suptitle(
        f"Expert share per part of speech (chance k/E = {pos['chance_share']:.3f})",
        fontsize=11,
    )
    return fig


def ablation_figure(pos: dict):
    """Linear-probe accuracy from each single layer, from the first i layers, and without each layer."""
    ablation = pos["ablation"]
    layers = [str(x) for x in pos["layers"]]
    x = np.arange(len(layers))
    fig = _figure(max(6.6, 0.45 * len(layers) + 4.1), 3.6)
    ax = fig.subplots()
    ax.plot(
        x,
        [ablation["single"][layer] for layer in layers],
        "o-",
        label="this layer alone",
    )
    ax.plot(
        x,
        [ablation["prefix"][str(i + 1)] for i in x],
        "s-",
        label="layers up to this one",
    )
    if ablation.get("drop"):
        ax.plot(
            x,
            [ablation["drop"][layer] for layer in layers],
            "^-",
            label="all layers but this one",
        )
    probe = pos["probe"]
    kind = "MLP" if str(ablation.get("classifier", "")).startswith("MLP") else "linear"
    ax.axhline(ablation["full"], color="0.3", lw=1, ls="-", label=f"all layers ({kind} probe)")
    ax.axhline(
        probe["baseline_word"],
        color="tab:red",
        lw=1,
        ls="--",
        label="word-form baseline",
    )
    ax.axhline(probe["baseline_majority"], color="0.5", lw=1, ls=":", label="majority tag")
    ax.set_xticks(x, layers)
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("test accuracy (held-out sentences)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the axes: never over a line
    ax.set_title("Which layers' routing carries part of speech", fontsize=10)
    return fig


def path_map_figure(pos: dict):
    """The t-SNE scatter of routing paths, one colour per tag, silhouettes in the legend."""
    tsne = pos["tsne"]
    points = np.asarray(tsne["points"], dtype=float).reshape(-1, 2)
    labels = np.asarray(tsne["labels"])
    fig = _figure(7.0, 5.5)
    ax = fig.subplots()
    # Most frequent first; ties by name, so that colours do not depend on the hash seed of `set`.
    tags = sorted(set(labels.tolist()), key=lambda t: (-(labels == t).sum(), t))
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    for i, tag in enumerate(tags):
        mask = labels == tag
        s = tsne.get("silhouette", {}).get(tag)
        s0 = tsne.get("silhouette_shuffled", {}).get(tag)
        name = tag if s is None else f"{tag} ({s:+.2f} vs {s0:+.2f})"
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=6,
            color=cmap(i % 20),
            label=name,
            alpha=0.8,
            linewidths=0,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(
        fontsize=6,
        markerscale=2.5,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        title="tag (silhouette vs shuffled)",
        title_fontsize=7,
    )
    ax.set_title("Routing paths, t-SNE, coloured by part of speech", fontsize=10)
    return fig
