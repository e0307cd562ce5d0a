"""Section of the expert-cache simulation (`routelens simulate cache`): hit rate against capacity
per policy, with the shuffled-order control, and with `--budget-bytes` the memory budget table
(the best split of a total over layers against the uniform split of the same bytes).
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
    body = figure(
        ctx.sink.add(cache_figure(result, shuffled, shown), "cache"),
        f"Expert-cache hit rate against capacity per policy, at layers {esc(', '.join(shown))}"
        + ("; dotted: the same tokens in a random order (no locality)." if shuffled else "."),
    )
    caps = sorted({int(c) for by_layer in result.values() for c in by_layer[layers[0]]})
    loads = ctx.analysis.get("cache_loads") or {}
    rows = [[esc(policy)] + _layer_means(by_layer, layers, caps, pct) for policy, by_layer in result.items()]
    rows += [
        [f"{esc(policy)}, shuffled"] + _layer_means(by_layer, layers, caps, pct)
        for policy, by_layer in shuffled.items()
    ]
    classes = [""] * len(result) + ["base"] * len(shuffled)
    body += "<h3>Hit rate averaged over layers</h3>" + table(
        ["policy"] + [f"{c} experts" for c in caps], rows, row_classes=classes
    )
    if loads:
        rows = [[esc(policy)] + _layer_means(by_layer, layers, caps, num) for policy, by_layer in loads.items()]
        body += "<h3>Experts loaded per token (demand misses + prefetch loads), averaged over layers</h3>" + table(
            ["policy"] + [f"{c} experts" for c in caps], rows
        )
    budget = ctx.analysis.get("cache_budget")
    if isinstance(budget, dict) and budget:
        body += budget_table(budget, ctx.layers)
    note = (
        "One expert cache per layer (offloading), tokens replayed in document order; a token's k experts are "
        "requested together and misses are loaded. LRU and LFU are online policies; Belady evicts the expert "
        "needed farthest in the future and is the optimal demand-paging policy (the fewest misses of any policy "
        "that loads only what is requested), so its gap to LRU is what a better eviction rule could still gain. "
        "It does not bound policies that load ahead: prefetch can hit more often than Belady while moving more "
        "experts, so read each hit rate beside its loads per token. Positional locality is what lets a small cache hit."
    )
    return Section("cache", "Expert caching", note, body)


def budget_table(budget: dict, trace_layers: list[str]) -> str:
    """`cache_budget` {policy: {total bytes: {slots, best, uniform}}} as two rows per total: the
    best split, then the uniform one (a baseline row), each with its hit rate, loads and split."""
    timed = any(
        "load_seconds_per_token" in row[name]
        for by_total in budget.values()
        for row in by_total.values()
        for name in ("best", "uniform")
    )
    header = ["policy", "budget", "split", "hit rate", "loads / token"] + (["load time / token"] if timed else [])
    rows, classes, layers = [], [], []
    for policy, by_total in budget.items():
        for total in sorted(by_total, key=float):
            row = by_total[total]
            for name in ("best", "uniform"):
                entry = row[name]
                split = entry["split"]
                layers = [layer for layer in trace_layers if layer in split] or list(split)
                cells = [
                    esc(policy),
                    f'{_bytes(float(total))}<span class="sub">{int(row["slots"]):,} experts</span>',
                    name,
                    pct(entry["hit_rate"], 2),
                    num(entry["loads_per_token"]),
                ]
                if timed:
                    cells.append(_seconds(entry.get("load_seconds_per_token")))
                rows.append(cells + [" ".join(str(int(split[layer])) for layer in layers)])
                classes.append("base" if name == "uniform" else "")
    header.append(
        "experts per layer"
        + (f" ({esc(', '.join(layers))})" if len(layers) <= 8 else f" (layers {esc(layers[0])}–{esc(layers[-1])})")
    )
    note = (
        "<p>Which layers deserve the memory: a total of S = ⌊budget / expert bytes⌋ expert slots is split over the "
        "layers. The <i>best</i> split maximises the hits summed over layers (the hit rate over all requests), exactly, "
        "by dynamic programming over the layers' hit curves at every capacity 0..E; the <i>uniform</i> baseline gives "
        "every layer ⌊S/L⌋ slots and the first S mod L layers one more, the same bytes. Loads per token are summed over "
        "all layers" + (", and their time assumes loads are not overlapped with compute" if timed else "") + ".</p>"
    )
    return "<h3>Memory budget: expert slots split over layers</h3>" + note + table(header, rows, row_classes=classes)


def _bytes(n: float) -> str:
    """Bytes with a decimal unit (a budget is named in bytes)."""
    unit, scale = next(((u, s) for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if n >= s), ("B", 1.0))
    return f"{n / scale:,.{0 if scale == 1.0 else 1}f} {unit}"


def _seconds(value: float | None) -> str:
    """A duration per token in the unit that keeps it readable (ms, µs or ns)."""
    if value is None:
        return "–"
    value = float(value)
    unit, scale = next(((u, s) for u, s in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)) if value >= s), ("ns", 1e-9))
    return f"{value / scale:,.3g} {unit}"


def _layer_means(by_layer: dict, layers: list[str], caps: list[int], fmt) -> list[str]:
    """One table row: per capacity, the mean over the layers that have it, formatted, or a dash."""
    cells = []
    for c in map(str, caps):
        values = [by_layer[layer][c] for layer in layers if c in by_layer.get(layer, {})]
        cells.append(fmt(np.mean(values)) if values else "–")
    return cells
