"""Section of expert co-activation (OLMoE): how often the tokens that select expert i also select
expert j, as heatmaps at a few layers.
"""

from __future__ import annotations

import numpy as np

from routelens.report.figures.grids import heatmap_grid
from routelens.report.html import Section, figure
from routelens.report.sections.context import ReportContext, spread_layers


def coactivation_section(ctx: ReportContext) -> Section | None:
    co = ctx.analysis.get("coactivation")
    if not co or ctx.top_k < 2:
        return None
    shown = [layer for layer in spread_layers(ctx.layers, 4) if layer in co]
    mats = {}
    for layer in shown:
        m = np.asarray(co[layer], dtype=float)  # (E, E), row i: N(i and j) / N(i)
        m = m.copy()
        np.fill_diagonal(m, np.nan)
        mats[layer] = m
    labels = [str(e) for e in range(ctx.num_ids)]
    body = figure(
        ctx.sink.add(
            heatmap_grid(mats, labels, title="", cmap="viridis", annotate=False, axis_labels=("expert j", "expert i")),
            "coactivation",
        ),
        f"Co-activation N(i and j both selected) / N(i), all pairs within the top-k, at layers {', '.join(shown)}; "
        "the diagonal is left blank.",
    )
    note = (
        "Following OLMoE: for each pair of experts, the share of the tokens that select expert i that also select "
        f"expert j among their top-{ctx.top_k} (all pairs within the top-k; the JSON also gives the adjacent-rank "
        "variant, <code>coactivation_adjacent</code>, ranks r and r+1 only). Under independent uniform routing every off-diagonal cell is "
        f"(k−1)/(E−1) = {(ctx.top_k - 1) / (ctx.num_ids - 1):.3f}; bright cells are experts that work in pairs."
    )
    return Section("coactivation", "Expert co-activation", note, body)
