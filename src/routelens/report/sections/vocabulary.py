"""Section of vocabulary specialization (OLMoE): how far a token id decides its expert, per layer,
and the tokens most typical of each expert.
"""

from __future__ import annotations

from routelens.report.figures.vocabulary import vocabulary_figure
from routelens.report.html import Section, esc, figure, pct, table
from routelens.report.sections.context import ReportContext, spread_layers


def vocabulary_section(ctx: ReportContext) -> Section | None:
    vocab = ctx.analysis.get("vocabulary")
    if not vocab:
        return None
    series = {"input token": vocab}
    if ctx.analysis.get("vocabulary_next"):
        series["next token"] = ctx.analysis["vocabulary_next"]
    # The chance line: routing independent of token identity at the same load and token counts
    # (`vocabulary_null`); older results have only k/E, which understates it for rare tokens.
    null = ctx.analysis.get("vocabulary_null")
    chance = null if null else ctx.top_k / ctx.num_ids
    chance_text = (
        "Dashed: chance, the same tokens routed independently of their identity at the layer's load "
        "(token ids shuffled among rows)."
        if null
        else "Dashed: k/E, what uniform routing gives frequent tokens."
    )
    body = figure(
        ctx.sink.add(vocabulary_figure(series, ctx.layers, chance=chance), "vocabulary"),
        "Vocabulary specialization per layer: for each token id, the share of its occurrences routed to its most "
        "frequent expert, averaged over token ids. " + chance_text,
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
