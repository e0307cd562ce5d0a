"""Section of the expert-cache simulation (`routelens simulate cache`): hit rate against capacity
per policy, with the shuffled-order control.
"""

from __future__ import annotations

import numpy as np

from routelens.report.figures.cache import cache_figure
from routelens.report.html import Section, esc, figure, num, pct, table
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
                  f"Expert-cache hit rate against capacity per policy, at layers {esc(', '.join(shown))}"
                  + ("; dotted: the same tokens in a random order (no locality)." if shuffled else "."))  # fmt: skip
    caps = sorted({int(c) for by_layer in result.values() for c in by_layer[layers[0]]})
    loads = ctx.analysis.get("cache_loads") or {}
    rows = [[esc(policy)] + _layer_means(by_layer, layers, caps, pct) for policy, by_layer in result.items()]
    rows += [[f"{esc(policy)}, shuffled"] + _layer_means(by_layer, layers, caps, pct) for policy, by_layer in shuffled.items()]
    classes = [""] * len(result) + ["base"] * len(shuffled)
    body += "<h3>Hit rate averaged over layers</h3>" + table(["policy"] + [f"{c} experts" for c in caps], rows, row_classes=classes)
    if loads:
        rows = [[esc(policy)] + _layer_means(by_layer, layers, caps, num) for policy, by_layer in loads.items()]
        body += ("<h3>Experts loaded per token (demand misses + prefetch loads), averaged over layers</h3>"
                 + table(["policy"] + [f"{c} experts" for c in caps], rows))  # fmt: skip
    note = (
        "One expert cache per layer (offloading), tokens replayed in document order; a token's k experts are "
        "requested together and misses are loaded. LRU and LFU are online policies; Belady evicts the expert "
        "needed farthest in the future and is the optimal demand-paging policy (the fewest misses of any policy "
        "that loads only what is requested), so its gap to LRU is what a better eviction rule could still gain. "
        "It does not bound policies that load ahead: prefetch can hit more often than Belady while moving more "
        "experts, so read each hit rate beside its loads per token. Positional locality is what lets a small cache hit."
    )
    return Section("cache", "Expert caching", note, body)


def _layer_means(by_layer: dict, layers: list[str], caps: list[int], fmt) -> list[str]:
    """One table row: per capacity, the mean over the layers that have it, formatted, or a dash."""
    cells = []
    for c in map(str, caps):
        values = [by_layer[layer][c] for layer in layers if c in by_layer.get(layer, {})]
        cells.append(fmt(np.mean(values)) if values else "–")
    return cells
