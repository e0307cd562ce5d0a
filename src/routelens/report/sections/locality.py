"""Section of positional locality (Mixtral Table 5): the share of consecutive tokens routed alike,
against the permutation baseline and uniform random routing (the analysis' `random_baseline`).
"""

from __future__ import annotations

from routelens.analysis.locality import random_baseline
from routelens.report.figures.locality import locality_distance_figure, locality_layer_figure
from routelens.report.html import Section, esc, figure, pct, table
from routelens.report.sections.context import ReportContext, spread_layers


def locality_section(ctx: ReportContext) -> Section | None:
    loc = ctx.analysis.get("locality")
    if not loc:
        return None
    perm = ctx.analysis.get("locality_permuted") or {}
    base = ctx.analysis.get("locality_baseline") or random_baseline(ctx.num_ids, ctx.top_k)
    domains = ctx.present(loc) + (["all"] if "all" in loc else [])
    kinds = [("first", "First choice")] + (
        [("any", "First or second choice" if ctx.top_k == 2 else f"Any of the top-{ctx.top_k}")]
        if ctx.top_k > 1
        else []
    )
    cols = ctx.table_layers
    head = (
        "<tr><th></th>"
        + "".join(f'<th colspan="{len(cols)}" style="text-align:center">{t}</th>' for _, t in kinds)
        + "</tr>"
    )
    head += "<tr><th>domain</th>" + "".join(f"<th>layer {esc(c)}</th>" for _ in kinds for c in cols) + "</tr>"

    ci = ctx.analysis.get("locality_ci") or {}
    sd = ctx.analysis.get("locality_permuted_sd") or {}

    def cell(d: str, layer: str, kind: str) -> str:
        sub = f'<span class="sub">perm. {pct(perm[d][layer][kind])}' if d in perm and layer in perm[d] else ""
        spread = (sd.get(d) or {}).get(layer, {}).get(kind)
        if sub and spread is not None:
            sub += f" ± {pct(spread)}"
        sub += "</span>" if sub else ""
        interval = (ci.get(d) or {}).get(layer, {}).get(kind) or {}
        shown = f" [{pct(interval['low'])}–{pct(interval['high'])}]" if interval.get("low") is not None else ""
        return pct(loc[d][layer][kind]) + f'<span class="sub">{shown.strip()}</span>' * bool(shown) + sub

    rows = [[esc(d)] + [cell(d, c, kind) for kind, _ in kinds for c in cols] for d in domains]
    rows.append(["uniform random"] + [pct(base[kind]) for kind, _ in kinds for _c in cols])
    body = table([], rows, header_html=head, row_classes=[""] * len(domains) + ["base"])
    if cols != ctx.layers:
        full = [[esc(layer)] + [pct(loc[d][layer][kind]) for d in domains for kind, _ in kinds] for layer in ctx.layers]
        body += (
            "<details><summary>All layers</summary>"
            + table(["layer"] + [f"{esc(d)} · {kind}" for d in domains for kind, _ in kinds], full)
            + "</details>"
        )
    body += figure(
        ctx.sink.add(locality_layer_figure(loc, perm, base, ctx.layers, domains, ctx.top_k), "locality-by-layer"),
        "Share of consecutive tokens routed alike, per layer. Dotted: the same domain with positions shuffled "
        "within documents; dashed: uniform random routing.",
    )
    by_dist = ctx.analysis.get("locality_distance")
    if by_dist and ctx.present(by_dist):
        shown = spread_layers(ctx.layers, 4)
        body += figure(
            ctx.sink.add(
                locality_distance_figure(by_dist, shown, ctx.present(by_dist), base, ctx.top_k), "locality-by-distance"
            ),
            f"Same-expert share of tokens d positions apart (solid: first choice{', dashed: top-k overlap' if ctx.top_k > 1 else ''}), "
            f"at layers {', '.join(shown)}.",
        )
    note = (
        "For every pair of consecutive tokens of a document (positions i and i+1), <i>first</i> is the share "
        "whose first-choice experts are equal and <i>any</i> the share whose top-k sets share at least one "
        "expert (layout of Mixtral Table 5). Uniform random routing gives exactly 1/E and 1 − C(E−k, k)/C(E, k). "
        "A router with unbalanced load exceeds these without any locality, so the permutation baseline (grey "
        "small print: positions shuffled within each document, same experts, mean ± standard deviation over "
        "the permutations) is the fair reference: the gap between a value and its permuted one is what the order "
        "of tokens adds. Brackets: 95% percentile bootstrap interval over documents. Pairs that straddle a "
        "tracing window (the second token was routed without the first in context) are left out unless "
        "<code>--keep-straddling</code>."
    )
    return Section("locality", "Positional locality", note, body)
