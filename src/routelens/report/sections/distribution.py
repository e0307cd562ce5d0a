"""Sections of the expert distribution per domain (Mixtral Fig. 7/10) and of the distance between
domains (Jensen-Shannon divergence per layer, with the analysis' bootstrap intervals).

The divergence is the analysis' own (`routelens.analysis.distribution.js_divergence`); the report
computes it only for an analysis saved without `domain_distance`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from routelens.analysis.distribution import js_divergence, normalise
from routelens.report.figures.distribution import distribution_figure, js_layer_figure
from routelens.report.figures.grids import heatmap_grid
from routelens.report.html import Section, esc, figure, num, table
from routelens.report.sections.context import ReportContext, spread_layers


def distribution_section(ctx: ReportContext) -> Section | None:
    dist = ctx.analysis.get("distribution")
    if not dist:
        return None
    E, k = ctx.num_ids, ctx.top_k
    domains = ctx.present(dist)
    body = figure(
        ctx.sink.add(distribution_figure(dist, ctx.layers, domains, E, uniform=1 / E), "distribution"),
        f"Share of expert assignments per expert, per domain, for every MoE layer. Dashed: uniform 1/E = {1 / E:.3f}.",
    )
    choice = ctx.analysis.get("distribution_choice") or {}
    if choice and all(isinstance(choice[d][ctx.layers[0]], dict) for d in ctx.present(choice)):
        cd = ctx.present(choice)
        first = {d: {layer: choice[d][layer]["first"] for layer in ctx.layers} for d in cd}
        body += figure(
            ctx.sink.add(
                distribution_figure(first, ctx.layers, cd, E, uniform=1 / E, ylabel="share of first choices"),
                "distribution-first",
            ),
            "First choice only (Mixtral Fig. 7 counts the first choice). Dashed: uniform 1/E.",
        )
        if k > 1 and all("any_per_token" in choice[d][ctx.layers[0]] for d in cd):
            per_token = {d: {layer: choice[d][layer]["any_per_token"] for layer in ctx.layers} for d in cd}
            body += figure(
                ctx.sink.add(
                    distribution_figure(per_token, ctx.layers, cd, E, uniform=k / E, ylabel="share of tokens"),
                    "distribution-per-token",
                ),
                f"Share of tokens that have the expert among their top-{k} (normalised per token). Dashed: uniform k/E = {k / E:.3f}.",
            )
    note = (
        f"For every layer, each token contributes its {k} selected expert{'s' if k > 1 else ''}; the bars give the "
        "share of these assignments that each expert receives within a domain, so each domain's bars sum to 1 and "
        f"an evenly loaded router sits on the dashed line 1/E. Domains whose bars coincide are routed alike "
        "(Mixtral found no clear topic specialization); an expert far above the line in one domain only is a "
        "domain expert. See the next section for a distance with confidence intervals."
    )
    return Section("distribution", "Expert distribution per domain", note, body)


def domain_distance_section(ctx: ReportContext) -> Section | None:
    dd = ctx.analysis.get("domain_distance")
    dist = ctx.analysis.get("distribution") or {}
    domains = ctx.present(dist)
    with_ci = bool(dd) and all("pairs" in dd.get(layer, {}) for layer in ctx.layers)
    if with_ci:
        pairs = {layer: dd[layer]["pairs"] for layer in ctx.layers}
        names = sorted(
            {p["a"] for ps in pairs.values() for p in ps} | {p["b"] for ps in pairs.values() for p in ps},
            key=lambda d: ctx.domains.index(d) if d in ctx.domains else len(ctx.domains),
        )
    elif len(domains) >= 2:
        names = domains
        pairs = {
            layer: [
                {"a": a, "b": b, "js": float(js_matrix(dist, [a, b], layer)[0, 1])}
                for i, a in enumerate(domains)
                for b in domains[i + 1 :]
            ]
            for layer in ctx.layers
        }
    else:
        return None
    if not pairs[ctx.layers[0]]:
        return None
    body = figure(
        ctx.sink.add(js_layer_figure(pairs, ctx.layers), "domain-distance-by-layer"),
        "Jensen-Shannon divergence (bits) between the expert distributions of two domains, per layer"
        + (
            "; bands: bootstrap 95% interval over documents."
            if with_ci
            else " (no bootstrap intervals in this analysis)."
        ),
    )
    index = {d: i for i, d in enumerate(names)}
    shown = spread_layers(ctx.layers, 8)
    mats = {}
    for layer in shown:
        m = np.zeros((len(names), len(names)))
        for p in pairs[layer]:
            m[index[p["a"]], index[p["b"]]] = m[index[p["b"]], index[p["a"]]] = np.nan if p["js"] is None else p["js"]
        mats[layer] = m
    body += figure(
        ctx.sink.add(heatmap_grid(mats, names, title="", cmap="Purples"), "domain-distance-heatmaps"),
        f"Jensen-Shannon divergence between domains at layers {', '.join(shown)}.",
    )
    cols = ctx.table_layers

    def cell(p: dict) -> str:
        ci = (
            f'<span class="sub">[{num(p["ci_low"], 4)}, {num(p["ci_high"], 4)}]</span>'
            if p.get("ci_low") is not None
            else ""
        )
        return num(p["js"], 4) + ci

    rows = [
        [f"{esc(a)} – {esc(b)}"] + [cell(next(p for p in pairs[c] if (p["a"], p["b"]) == (a, b))) for c in cols]
        for a, b in [(p["a"], p["b"]) for p in pairs[ctx.layers[0]]]
    ]
    body += table(["domains"] + [f"layer {esc(c)}" for c in cols], rows)
    note = (
        "The Jensen-Shannon divergence (base 2: 0 for identical distributions, 1 for disjoint ones) between two "
        "domains' expert-assignment distributions at one layer. "
        + (
            "The interval is the 2.5–97.5% percentile range of the divergence over documents resampled with "
            "replacement (bootstrap), so it contains the value shown; a plug-in divergence is biased upward (two "
            "samples of one routing give a small positive value), so compare an interval with the values of two "
            "samples of the same domain, not with 0. Its square root, the Jensen-Shannon distance, is in the JSON "
            "(<code>js_distance</code>)."
            if with_ci
            else "This analysis carried no bootstrap intervals, so the report computed the divergences "
            "from the distributions; re-run `routelens analyze` to get intervals."
        )
    )
    return Section("domain-distance", "Distance between domains", note, body)


def js_matrix(distribution: dict, domains: Sequence[str], layer: str) -> np.ndarray:
    """(domains, domains) Jensen-Shannon divergences between the domains' expert distributions,
    for an analysis saved without `domain_distance` (no bootstrap intervals then)."""
    n = len(domains)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            p, q = (normalise(distribution[d][layer]) for d in (domains[i], domains[j]))
            out[i, j] = out[j, i] = float(js_divergence(p, q))
    return out
