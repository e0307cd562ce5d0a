"""The report's sections of the Mixtral / OLMoE routing analyses, each built from the analysis dict.

Every builder takes the `ReportContext` and returns a `Section`, or None when the analysis lacks
its keys (the report then lists it as not available instead of failing). Layer keys are the
true layer indices written as strings, as in the analysis JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from routelens.report import figures as F
from routelens.report.figures_io import FigureSink
from routelens.report.html import Section, cards, esc, figure, kv_table, num, pct, table
from routelens.report.numbers import js_matrix, random_locality, spread_layers
from routelens.report.token_view import collect_samples, render_token_view
from routelens.store import Trace


@dataclass
class ReportContext:
    trace: Trace
    analysis: dict
    sink: FigureSink
    layers: list[str]  # every MoE layer, true indices as strings
    domains: list[str]  # the trace's domains (the pooled `all` is not one)
    num_experts: int
    top_k: int
    view_layers: list[int]  # layers of the token view
    token_docs: int = 2  # documents per domain in the token view
    token_count: int = 160  # tokens per document in the token view
    notes: list[str] = field(default_factory=list)  # sections left out, and why

    def present(self, mapping: dict) -> list[str]:
        """The trace's domains that `mapping` has, in trace order."""
        return [d for d in self.domains if d in mapping]

    @property
    def table_layers(self) -> list[str]:
        """Layers of the compact tables: all when few, else first, middle and last (as Mixtral)."""
        return self.layers if len(self.layers) <= 4 else spread_layers(self.layers, 3)


def summary(ctx: ReportContext) -> Section:
    m = ctx.trace.manifest
    model = m.get("model") or {}
    corpora = m.get("corpora") or []
    total = sum(int(c.get("tokens", 0)) for c in corpora) or ctx.trace.num_tokens
    layer_list = ", ".join(ctx.layers) if len(ctx.layers) <= 16 else f"{ctx.layers[0]} … {ctx.layers[-1]}"
    body = cards([
        ("model", esc(model.get("name_or_path", "unknown"))),
        ("tokens", f"{total:,}"),
        ("MoE layers", f"{len(ctx.layers)}"),
        ("experts E", f"{ctx.num_experts}"),
        ("top-k", f"{ctx.top_k}"),
        ("domains", f"{len(ctx.domains)}"),
    ])  # fmt: skip
    rows = [
        [esc(c["name"]), esc(c.get("source", "")), f"{int(c.get('documents', 0)):,}", f"{int(c.get('tokens', 0)):,}",
         pct(int(c.get("tokens", 0)) / total if total else None)]
        for c in corpora
    ]  # fmt: skip
    body += "<h3>Corpora</h3>" + table(["domain", "source", "documents", "tokens", "share"], rows)
    facts = [
        ("architecture", model.get("architecture")),
        ("family", m.get("family")),
        ("routing rule", m.get("routing_rule")),
        ("MoE layers (true indices)", layer_list),
        ("tokenizer", (m.get("tokenizer") or {}).get("name")),
        ("sequence length", m.get("seq_len")),
        ("parameters per expert", f"{model['expert_params']:,}" if model.get("expert_params") else None),
        ("trace", str(ctx.trace.path)),
    ]
    body += "<h3>Trace</h3>" + kv_table([(k, v) for k, v in facts if v not in (None, "")])
    return Section("summary", "Summary", "", body)


def distribution(ctx: ReportContext) -> Section | None:
    dist = ctx.analysis.get("distribution")
    if not dist:
        return None
    E, k = ctx.num_experts, ctx.top_k
    domains = ctx.present(dist)
    body = figure(
        ctx.sink.add(F.distribution_figure(dist, ctx.layers, domains, E, uniform=1 / E), "distribution"),
        f"Share of expert assignments per expert, per domain, for every MoE layer. Dashed: uniform 1/E = {1 / E:.3f}.",
    )
    choice = ctx.analysis.get("distribution_choice") or {}
    if choice and all(isinstance(choice[d][ctx.layers[0]], dict) for d in ctx.present(choice)):
        cd = ctx.present(choice)
        first = {d: {layer: choice[d][layer]["first"] for layer in ctx.layers} for d in cd}
        body += figure(
            ctx.sink.add(F.distribution_figure(first, ctx.layers, cd, E, uniform=1 / E, ylabel="share of first choices"), "distribution-first"),
            "First choice only (Mixtral Fig. 7 counts the first choice). Dashed: uniform 1/E.",
        )  # fmt: skip
        if k > 1 and all("any_per_token" in choice[d][ctx.layers[0]] for d in cd):
            per_token = {d: {layer: choice[d][layer]["any_per_token"] for layer in ctx.layers} for d in cd}
            body += figure(
                ctx.sink.add(F.distribution_figure(per_token, ctx.layers, cd, E, uniform=k / E, ylabel="share of tokens"), "distribution-per-token"),
                f"Share of tokens that have the expert among their top-{k} (normalised per token). Dashed: uniform k/E = {k / E:.3f}.",
            )  # fmt: skip
    note = (
        f"For every layer, each token contributes its {k} selected expert{'s' if k > 1 else ''}; the bars give the "
        "share of these assignments that each expert receives within a domain, so each domain's bars sum to 1 and "
        f"an evenly loaded router sits on the dashed line 1/E. Domains whose bars coincide are routed alike "
        "(Mixtral found no clear topic specialization); an expert far above the line in one domain only is a "
        "domain expert. See the next section for a distance with confidence intervals."
    )
    return Section("distribution", "Expert distribution per domain", note, body)


def domain_distance(ctx: ReportContext) -> Section | None:
    dd = ctx.analysis.get("domain_distance")
    dist = ctx.analysis.get("distribution") or {}
    domains = ctx.present(dist)
    with_ci = bool(dd) and all("pairs" in dd.get(layer, {}) for layer in ctx.layers)
    if with_ci:
        pairs = {layer: dd[layer]["pairs"] for layer in ctx.layers}
        names = sorted({p["a"] for ps in pairs.values() for p in ps} | {p["b"] for ps in pairs.values() for p in ps},
                       key=lambda d: ctx.domains.index(d) if d in ctx.domains else len(ctx.domains))  # fmt: skip
    elif len(domains) >= 2:
        names = domains
        pairs = {
            layer: [{"a": a, "b": b, "js": float(js_matrix(dist, [a, b], layer)[0, 1])}
                    for i, a in enumerate(domains) for b in domains[i + 1:]]
            for layer in ctx.layers
        }  # fmt: skip
    else:
        return None
    if not pairs[ctx.layers[0]]:
        return None
    body = figure(
        ctx.sink.add(F.js_layer_figure(pairs, ctx.layers), "domain-distance-by-layer"),
        "Jensen-Shannon divergence (bits) between the expert distributions of two domains, per layer"
        + ("; bands: bootstrap 95% interval over documents." if with_ci else " (no bootstrap intervals in this analysis)."),
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
        ctx.sink.add(F.heatmap_grid(mats, names, title="", cmap="Purples"), "domain-distance-heatmaps"),
        f"Jensen-Shannon divergence between domains at layers {', '.join(shown)}.",
    )
    cols = ctx.table_layers

    def cell(p: dict) -> str:
        ci = f'<span class="sub">[{num(p["ci_low"], 4)}, {num(p["ci_high"], 4)}]</span>' if p.get("ci_low") is not None else ""
        return num(p["js"], 4) + ci

    rows = [
        [f"{esc(a)} – {esc(b)}"] + [cell(next(p for p in pairs[c] if (p["a"], p["b"]) == (a, b))) for c in cols]
        for a, b in [(p["a"], p["b"]) for p in pairs[ctx.layers[0]]]
    ]  # fmt: skip
    body += table(["domains"] + [f"layer {esc(c)}" for c in cols], rows)
    note = (
        "The Jensen-Shannon divergence (base 2: 0 for identical distributions, 1 for disjoint ones) between two "
        "domains' expert-assignment distributions at one layer. "
        + ("The interval comes from resampling documents with replacement (bootstrap); an interval that stays "
           "clear of the values of two samples of the same domain supports a real difference."
           if with_ci else "This analysis carried no bootstrap intervals, so the report computed the divergences "
           "from the distributions; re-run `routelens analyze` to get intervals.")
    )  # fmt: skip
    return Section("domain-distance", "Distance between domains", note, body)


def locality(ctx: ReportContext) -> Section | None:
    loc = ctx.analysis.get("locality")
    if not loc:
        return None
    perm = ctx.analysis.get("locality_permuted") or {}
    base = ctx.analysis.get("locality_baseline") or random_locality(ctx.num_experts, ctx.top_k)
    domains = ctx.present(loc) + (["all"] if "all" in loc else [])
    kinds = [("first", "First choice")] + (
        [("any", "First or second choice" if ctx.top_k == 2 else f"Any of the top-{ctx.top_k}")] if ctx.top_k > 1 else []
    )
    cols = ctx.table_layers
    head = "<tr><th></th>" + "".join(f'<th colspan="{len(cols)}" style="text-align:center">{t}</th>' for _, t in kinds) + "</tr>"
    head += "<tr><th>domain</th>" + "".join(f"<th>layer {esc(c)}</th>" for _ in kinds for c in cols) + "</tr>"

    def cell(d: str, layer: str, kind: str) -> str:
        sub = f'<span class="sub">perm. {pct(perm[d][layer][kind])}</span>' if d in perm and layer in perm[d] else ""
        return pct(loc[d][layer][kind]) + sub

    rows = [[esc(d)] + [cell(d, c, kind) for kind, _ in kinds for c in cols] for d in domains]
    rows.append(["uniform random"] + [pct(base[kind]) for kind, _ in kinds for _c in cols])
    body = table([], rows, header_html=head, row_classes=[""] * len(domains) + ["base"])
    if cols != ctx.layers:
        full = [[esc(layer)] + [pct(loc[d][layer][kind]) for d in domains for kind, _ in kinds] for layer in ctx.layers]
        body += "<details><summary>All layers</summary>" + table(
            ["layer"] + [f"{esc(d)} · {kind}" for d in domains for kind, _ in kinds], full
        ) + "</details>"  # fmt: skip
    body += figure(
        ctx.sink.add(F.locality_layer_figure(loc, perm, base, ctx.layers, domains, ctx.top_k), "locality-by-layer"),
        "Share of consecutive tokens routed alike, per layer. Dotted: the same domain with positions shuffled "
        "within documents; dashed: uniform random routing.",
    )
    by_dist = ctx.analysis.get("locality_distance")
    if by_dist and ctx.present(by_dist):
        shown = spread_layers(ctx.layers, 4)
        body += figure(
            ctx.sink.add(F.locality_distance_figure(by_dist, shown, ctx.present(by_dist), base, ctx.top_k), "locality-by-distance"),
            f"Same-expert share of tokens d positions apart (solid: first choice{', dashed: top-k overlap' if ctx.top_k > 1 else ''}), "
            f"at layers {', '.join(shown)}.",
        )  # fmt: skip
    note = (
        "For every pair of consecutive tokens of a document (positions i and i+1), <i>first</i> is the share "
        "whose first-choice experts are equal and <i>any</i> the share whose top-k sets share at least one "
        "expert (layout of Mixtral Table 5). Uniform random routing gives exactly 1/E and 1 − C(E−k, k)/C(E, k). "
        "A router with unbalanced load exceeds these without any locality, so the permutation baseline (grey "
        "small print: positions shuffled within each document, same experts) is the fair reference: the gap "
        "between a value and its permuted one is what the order of tokens adds."
    )
    return Section("locality", "Positional locality", note, body)


def token_view(ctx: ReportContext) -> Section | None:
    samples = collect_samples(ctx.trace, ctx.view_layers, docs_per_domain=ctx.token_docs, max_tokens=ctx.token_count)
    if not samples:
        return None
    body = render_token_view(samples, ctx.view_layers, ctx.trace.vocab, ctx.num_experts)
    note = (
        f"The first {ctx.token_count} tokens of the first {ctx.token_docs} documents of each domain, each token "
        "coloured by its first-choice expert at the layer of its block (as Mixtral Fig. 8). Hover a token to "
        "see its top-k experts and weights. Whitespace and line breaks (↵) are kept, so indentation shows; "
        "runs of one colour are positional locality at work."
    )
    return Section("token-view", "Token view", note, body)


def vocabulary(ctx: ReportContext) -> Section | None:
    vocab = ctx.analysis.get("vocabulary")
    if not vocab:
        return None
    series = {"input token": vocab}
    if ctx.analysis.get("vocabulary_next"):
        series["next token"] = ctx.analysis["vocabulary_next"]
    # Uniform routing gives about k/E for frequent tokens (docs/analysis-json.md).
    chance = ctx.top_k / ctx.num_experts
    body = figure(
        ctx.sink.add(F.vocabulary_figure(series, ctx.layers, chance=chance), "vocabulary"),
        "Vocabulary specialization per layer: for each token id, the share of its occurrences routed to its most "
        "frequent expert, averaged over token ids. Dashed: k/E, what uniform routing gives frequent tokens.",
        narrow=True,
    )
    typical = ctx.analysis.get("vocabulary_tokens") or {}
    for layer in [layer for layer in spread_layers(ctx.layers, 3) if layer in typical]:
        rows = []
        for expert, tokens in sorted(typical[layer].items(), key=lambda kv: int(kv[0])):
            shown = " ".join(_typical_token(t) for t in tokens[:8])
            rows.append([esc(expert), shown])
        head = '<tr><th>expert</th><th style="text-align:left">most typical tokens (share of occurrences routed to it)</th></tr>'
        rows_html = table([], rows, header_html=head)
        rows_html = rows_html.replace("<td><span", '<td class="tokens"><span')
        body += f"<details{' open' if layer == ctx.layers[0] else ''}><summary>Tokens most typical of each expert, layer {esc(layer)}</summary>{rows_html}</details>"
    min_count = ((ctx.analysis.get("meta") or {}).get("params") or {}).get("min_count")
    note = (
        f"Following OLMoE: for every token id seen at least {min_count or 'the minimum count of'} times, the share of its occurrences sent "
        "to the expert it uses most, averaged over ids. Values near 1 mean the router decides largely by token "
        "identity; <i>next token</i> asks the same about the token that follows, which tells whether experts "
        "specialise in what the model predicts rather than what it reads."
    )
    return Section("vocabulary", "Vocabulary specialization", note, body)


def _typical_token(t: dict) -> str:
    title = esc(f"id {t.get('token_id')}, {t.get('count')} occurrences")
    text = t.get("token") or f"\u27e8{t.get('token_id')}\u27e9"
    return f'<span title="{title}">{esc(repr(text))} {pct(t.get("share"), 0)}</span>'


def coactivation(ctx: ReportContext) -> Section | None:
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
    labels = [str(e) for e in range(ctx.num_experts)]
    body = figure(
        ctx.sink.add(F.heatmap_grid(mats, labels, title="", cmap="viridis", annotate=False, axis_labels=("expert j", "expert i")), "coactivation"),
        f"Co-activation N(i and j both selected) / N(i) at layers {', '.join(shown)}; the diagonal is left blank.",
    )  # fmt: skip
    note = (
        "Following OLMoE: for each pair of experts, the share of the tokens that select expert i that also select "
        f"expert j among their top-{ctx.top_k}. Under independent uniform routing every off-diagonal cell is "
        f"(k−1)/(E−1) = {(ctx.top_k - 1) / (ctx.num_experts - 1):.3f}; bright cells are experts that work in pairs."
    )
    return Section("coactivation", "Expert co-activation", note, body)
