"""Section of router confidence: the first choice's weight and, where the trace stored router
probabilities, the largest probability and the entropy, as a table of means and histograms.
"""

from __future__ import annotations

import numpy as np

from routelens.report.figures.grids import histogram_grid
from routelens.report.html import Section, esc, figure, num, table
from routelens.report.sections.context import ReportContext, is_scalar, spread_layers


def _histogram(value) -> tuple | None:
    """(edges, counts) when `value` looks like a histogram {edges|bins, counts}, else None."""
    if isinstance(value, dict) and "counts" in value and ("edges" in value or "bins" in value):
        edges = np.asarray(value.get("edges", value.get("bins")), dtype=float)
        counts = np.asarray(value["counts"], dtype=float)
        return (edges, counts) if len(edges) == len(counts) + 1 else None
    return None


def confidence_section(ctx: ReportContext) -> Section | None:
    conf = ctx.analysis.get("confidence")
    layers = [layer for layer in ctx.layers if isinstance((conf or {}).get(layer), dict)]
    if not layers:
        return None
    scalars = [k for k, v in conf[layers[0]].items() if is_scalar(v)]
    means = [k for k, v in conf[layers[0]].items() if isinstance(v, dict) and is_scalar(v.get("mean"))]
    body = ""
    if scalars or means:
        rows = [
            [esc(layer)]
            + [num(conf[layer].get(k), 3) for k in scalars]
            + [num((conf[layer].get(k) or {}).get("mean"), 3) for k in means]
            for layer in layers
        ]
        header = [esc(k.replace("_", " ")) for k in scalars] + [f"mean {esc(k.replace('_', ' '))}" for k in means]
        body += table(["layer"] + header, rows)
    for key in [k for k, v in conf[layers[0]].items() if _histogram(v) is not None]:
        shown = [layer for layer in spread_layers(layers, 8) if _histogram(conf[layer].get(key)) is not None]
        hists = {layer: _histogram(conf[layer][key]) for layer in shown}
        label = key.replace("_", " ")
        body += figure(
            ctx.sink.add(histogram_grid(hists, xlabel=label, title=label), f"confidence-{key}"),
            f"Distribution of the router's {esc(label)} over tokens, at layers {', '.join(shown)}.",
        )
    if not body:
        return None
    note = (
        "How decided the router is: the weight it gave its first choice (as the model stores it: renormalised "
        "over the top-k or not, depending on the family) and, where the trace stored full router probabilities, "
        "the largest probability and the entropy in bits (0 when one expert takes everything, log2 E when the "
        "router cannot choose)."
    )
    return Section("confidence", "Router confidence", note, body)
