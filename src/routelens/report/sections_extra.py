"""Report sections from other analyses: router confidence, part of speech (`pos`), expert caching
(`cache`) and expert-parallel load (`balance`). Each renders only when its key is in the analysis.

The POS figures come from `routelens.analysis.pos_figures` (written with that analysis); the
cache and balance figures are drawn here from the simulators' JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from routelens.report.figures import BASELINE, histogram_grid
from routelens.report.figures_io import new_figure, style
from routelens.report.html import Section, esc, figure, num, pct, table
from routelens.report.numbers import DOMAIN_COLORS, spread_layers
from routelens.report.sections import ReportContext


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _histogram(value) -> tuple | None:
    """(edges, counts) when `value` looks like a histogram {edges|bins, counts}, else None."""
    if isinstance(value, dict) and "counts" in value and ("edges" in value or "bins" in value):
        edges = np.asarray(value.get("edges", value.get("bins")), dtype=float)
        counts = np.asarray(value["counts"], dtype=float)
        return (edges, counts) if len(edges) == len(counts) + 1 else None
    return None


def confidence(ctx: ReportContext) -> Section | None:
    conf = ctx.analysis.get("confidence")
    layers = [layer for layer in ctx.layers if isinstance((conf or {}).get(layer), dict)]
    if not layers:
        return None
    scalars = [k for k, v in conf[layers[0]].items() if _scalar(v)]
    means = [k for k, v in conf[layers[0]].items() if isinstance(v, dict) and _scalar(v.get("mean"))]
    body = ""
    if scalars or means:
        rows = [
            [esc(layer)] + [num(conf[layer].get(k), 3) for k in scalars]
            + [num((conf[layer].get(k) or {}).get("mean"), 3) for k in means]
            for layer in layers
        ]  # fmt: skip
        header = [esc(k.replace("_", " ")) for k in scalars] + [f"mean {esc(k.replace('_', ' '))}" for k in means]
        body += table(["layer"] + header, rows)
    for key in [k for k, v in conf[layers[0]].items() if _histogram(v) is not None]:
        shown = [layer for layer in spread_layers(layers, 8) if _histogram(conf[layer].get(key)) is not None]
        hists = {layer: _histogram(conf[layer][key]) for layer in shown}
        label = key.replace("_", " ")
        body += figure(ctx.sink.add(histogram_grid(hists, xlabel=label, title=label), f"confidence-{key}"),
                       f"Distribution of the router's {esc(label)} over tokens, at layers {', '.join(shown)}.")  # fmt: skip
    if not body:
        return None
    note = (
        "How decided the router is: the weight it gave its first choice (as the model stores it: renormalised "
        "over the top-k or not, depending on the family) and, where the trace stored full router probabilities, "
        "the largest probability and the entropy in bits (0 when one expert takes everything, log2 E when the "
        "router cannot choose)."
    )
    return Section("confidence", "Router confidence", note, body)


def pos(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("pos")
    if not isinstance(result, dict) or not result.get("specialization"):
        return None
    spec = result["specialization"]
    layers = [layer for layer in ctx.layers if layer in spec] or list(spec)
    cols = layers if len(layers) <= 4 else spread_layers(layers, 3)
    tags = sorted({t for layer in cols for t in spec[layer]}, key=lambda t: -int((result.get("counts") or {}).get(t, 0)))
    chance = result.get("chance_share", ctx.top_k / ctx.num_experts)

    def cell(layer: str, tag: str) -> str:
        e = spec[layer].get(tag)
        if e is None:
            return "–"
        strong = e["p_value"] < 0.01
        share = f"<b>{pct(e['max_share'])}</b>" if strong else pct(e["max_share"])
        return f'e{int(e["expert"])} · {share}<span class="sub">KL {num(e["kl"], 3)} · p {num(e["p_value"], 3)}</span>'

    counts = result.get("counts") or {}
    rows = [[esc(t), f"{int(counts.get(t, 0)):,}"] + [cell(layer, t) for layer in cols] for t in tags]
    body = table(["tag", "tokens"] + [f"layer {esc(layer)}" for layer in cols], rows)
    from routelens.analysis import pos_figures

    with style():
        if result.get("shares"):
            shown = [layer for layer in spread_layers(layers, 4) if layer in result["shares"]]
            body += figure(ctx.sink.add(pos_figures.specialization_figure(result, shown), "pos-specialization"),
                           "Share of each tag's tokens routed to each expert (among the top-k).")  # fmt: skip
        probe = result.get("probe") or {}
        if probe:
            names = [("accuracy", "routing-path probe"), ("macro_f1", "probe macro-F1"),
                     ("baseline_majority", "majority tag"), ("baseline_word", "word-form baseline"),
                     ("shuffled", "probe on shuffled paths")]  # fmt: skip
            body += "<h3>Routing-path probe</h3>" + table(
                ["measure", "test score"], [[label, pct(probe[key])] for key, label in names if _scalar(probe.get(key))]
            )
        if result.get("ablation") and result.get("layers"):
            body += figure(ctx.sink.add(pos_figures.ablation_figure(result), "pos-ablation"),
                           "Probe accuracy from each single layer, from the first i layers, and without each layer.",
                           narrow=True)  # fmt: skip
        if (result.get("tsne") or {}).get("points"):
            body += figure(ctx.sink.add(pos_figures.path_map_figure(result), "pos-path-map"),
                           "t-SNE of routing paths coloured by part of speech; silhouettes against shuffled paths.",
                           narrow=True)  # fmt: skip
    note = (
        f"Tokens carry gold (or tagger) UPOS tags. For each layer and tag, the expert that receives the largest "
        f"share of the tag's tokens among their top-k (chance k/E = {chance:.3f}), the KL divergence of the tag's "
        "expert distribution from the layer's overall one (which controls for unbalanced load), and a permutation "
        "p-value (tags shuffled; bold: p < 0.01). The probe predicts the tag from the routing path alone, tested "
        "on held-out sentences against majority, word-form and shuffled-path baselines."
    )
    return Section("pos", "Part of speech", note, body)


def _cache_figure(cache: dict, shuffled: dict, layers: Sequence[str]) -> Figure:
    with style():
        fig = new_figure(min(3.2 * len(layers), 12.5) + 0.4, 2.8)
        axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
        for ax, layer in zip(axes, layers):
            for i, (policy, by_layer) in enumerate(cache.items()):
                curve = sorted((int(c), float(h)) for c, h in by_layer[layer].items())
                color = DOMAIN_COLORS[i % len(DOMAIN_COLORS)]
                ax.plot(*zip(*curve), "-o", ms=2.5, lw=1.2, color=color, label=policy)
                if layer in shuffled.get(policy, {}):
                    control = sorted((int(c), float(h)) for c, h in shuffled[policy][layer].items())
                    ax.plot(*zip(*control), ":", lw=1.0, color=color)
            if shuffled:
                ax.plot([], [], ":", color="#6b7079", label="shuffled order")
            ax.set_title(f"layer {layer}")
            ax.set_xlabel("cache capacity (experts)")
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes[0].set_ylabel("hit rate")
        axes[-1].legend(loc="lower right")
    return fig


def cache(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("cache")
    if not isinstance(result, dict) or not result:
        return None
    first = next(iter(result.values()))
    layers = [layer for layer in ctx.layers if layer in first] or list(first)
    shown = spread_layers(layers, 4)
    shuffled = ctx.analysis.get("cache_shuffled") or {}
    body = figure(ctx.sink.add(_cache_figure(result, shuffled, shown), "cache"),
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


def balance(ctx: ReportContext) -> Section | None:
    result = ctx.analysis.get("balance")
    if not isinstance(result, dict) or not result:
        return None
    cfs = sorted({cf for by_cf in result.values() for cf in by_cf}, key=float)
    head = "<tr><th></th>" + "".join(f'<th colspan="2" style="text-align:center">CF {esc(cf)}</th>' for cf in cfs) + "</tr>"
    head += "<tr><th>placement</th>" + "<th>dropped</th><th>max/mean</th>" * len(cfs) + "</tr>"
    rows = []
    for placement, by_cf in result.items():
        row = [esc(placement)]
        control = (ctx.analysis.get("balance_shuffled") or {}).get(placement) or {}
        for cf in cfs:
            v, c = by_cf.get(cf) or {}, control.get(cf) or {}
            dropped = f'<span class="sub">shuffled {pct(c["dropped"], 2)}</span>' if c.get("dropped") is not None else ""
            spread = c.get("imbalance_max_mean")
            spread = f'<span class="sub">shuffled {num(spread, 2)}</span>' if spread is not None else ""
            row += [pct(v.get("dropped"), 2) + dropped, num(v.get("imbalance_max_mean"), 2) + spread]
        rows.append(row)
    body = table([], rows, header_html=head)
    with style():
        fig = new_figure(5.6, 2.6)
        ax = fig.subplots()
        for i, (placement, by_cf) in enumerate(result.items()):
            xs = [float(cf) for cf in cfs if cf in by_cf]
            ax.plot(xs, [by_cf[cf]["dropped"] for cf in cfs if cf in by_cf], "-o", ms=3, lw=1.2,
                    color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=placement)  # fmt: skip
        ax.axhline(0, **BASELINE)
        ax.set_xlabel("capacity factor CF")
        ax.set_ylabel("share of assignments dropped")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend()
    body += figure(ctx.sink.add(fig, "balance"), "Dropped assignments against the capacity factor, per placement.", narrow=True)
    note = (
        "Experts placed on devices (round-robin, or balanced from the trace's load with hot experts replicated); "
        "tokens grouped in batches in document order. Each expert accepts B·k/E·CF assignments per batch and drops "
        "the rest; max/mean is the load of the busiest device over the mean. Locality makes consecutive tokens "
        "pile onto the same experts, which is what over-subscribes them: the small print gives the same tokens "
        "in a random order."
    )
    return Section("balance", "Expert-parallel load", note, body)


def saturation(ctx: ReportContext) -> Section | None:
    """Router saturation (OLMoE): agreement of each checkpoint's routing with the final one's."""
    result = ctx.analysis.get("saturation")
    if not isinstance(result, dict) or not result.get("checkpoints") or not result.get("topk"):
        return None
    labels = [str(c) for c in result["checkpoints"]]
    layers = [layer for layer in ctx.layers if layer in result["topk"]] or list(result["topk"])
    baseline = result.get("baseline") or {}
    kinds = [("topk", f"top-{ctx.top_k} overlap with the final routing")] + (
        [("top1", "same first expert as the final routing")] if ctx.top_k > 1 and result.get("top1") else []
    )
    x = np.arange(len(labels))
    with style():
        fig = new_figure(4.4 * len(kinds) + 0.4, 2.9)
        axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
        for ax, (kind, title) in zip(axes, kinds):
            for i, layer in enumerate(layers):
                ax.plot(x, [float(v) for v in result[kind][layer]], "-o", ms=2.5, lw=1.2,
                        color=DOMAIN_COLORS[i % len(DOMAIN_COLORS)], label=f"layer {layer}")  # fmt: skip
            if baseline.get(kind) is not None:
                ax.axhline(float(baseline[kind]), **BASELINE, label="random")
            ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(title)
            ax.set_ylim(0, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes[0].set_ylabel("agreement with the final checkpoint")
        axes[-1].legend(loc="lower right", ncol=1 + len(layers) // 8)
    body = figure(ctx.sink.add(fig, "saturation"), "Routing of each training checkpoint against the final model's, on the same tokens; "
                  "dashed: the agreement of random routing.")  # fmt: skip
    rows = [[esc(layer)] + [pct(v) for v in result["topk"][layer]] for layer in layers]
    body += f"<h3>Top-{ctx.top_k} overlap with the final checkpoint</h3>" + table(["layer"] + [esc(c) for c in labels], rows)
    note = (
        "When does a router settle? Each checkpoint traced over the same tokens as the final model: the share of a "
        "token's top-k experts that the final model also chooses (OLMoE's router saturation). Agreement near the "
        "random line means the router has not yet found its assignment; early saturation means later training "
        "refines the experts more than the routing."
    )
    return Section("saturation", "Router saturation during training", note, body)
