"""Section of the expert-cache simulation (`routelens simulate cache`): hit rate against capacity
per policy, with the shuffled-order control.
"""

from __future__ import annotations

import numpy as np

from routelens.report.figures.cache import cache_figure
from routelens.report.html import Section, esc, figure, pct, table
from routelens.report.sections.context import ReportContext, spread_layers


def cache_section(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("cache")
    if not isinstance(result, dict) or not result:
        return None
    first = next(iter(result.values()))
    layers = [layer for layer in ctx.layers if layer in first] or list(first)
    shown = spread_layers(layers, 4)
    shuffled = ctx.analysis.get("cache_shuffled") or {}
    body = figure(ctx.sink.add(cache_figure(result, shuffled, shown), "cache"),
                  f"Expert-cache hit rate against capacity per policy, at layers {', '.join(shown)}"
                  + ("; dotted: the same tokens in a random order (no locality)." if shuffled else "."))  # fmt: skip
    caps = sorted({int(c) for by_layer in result.values() for c in by_layer[layers[0]]})
    rows = [
        [esc(policy)] + [pct(np.mean([by_layer[layer][str(c)] for layer in layers if str(c) in by_layer[layer]]))
                         if any(str(c) in by_layer[layer] for layer in layers) else "–" for c in caps]
        for policy, by_layer in result.items()
    ]  # fmt: skip
    for policy, by_layer in shuffled.items():
        rows.append([f"{esc(policy)}, shuffled"] + [
            pct(np.mean([by_layer[layer][str(c)] for layer in layers if str(c) in by_layer.get(layer, {})]))
            if any(str(c) in by_layer.get(layer, {}) for layer in layers) else "–" for c in caps
        ])  # fmt: skip
    classes = [""] * len(result) + ["base"] * len(shuffled)
    body += "<h3>Hit rate averaged over layers</h3>" + table(["policy"] + [f"{c} experts" for c in caps], rows, row_classes=classes)
    note = (
        "One expert cache per layer (offloading), tokens replayed in document order; a token's k experts are "
        "requested together and misses are loaded. LRU and LFU are online policies; Belady evicts the expert "
        "needed farthest in the future and is the offline bound, so the gap to it is what a better policy could "
        "still gain. Positional locality is what lets a small cache hit."
    )
    return Section("cache", "Expert caching", note, body)
