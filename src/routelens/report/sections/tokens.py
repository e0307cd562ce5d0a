"""Section of the token view (Mixtral Fig. 8): documents of each domain with every token coloured
by its first-choice expert (rendering in `routelens.report.token_view`).
"""

from __future__ import annotations

from routelens.report.html import Section
from routelens.report.sections.context import ReportContext
from routelens.report.token_view import collect_samples, render_token_view


def token_view_section(ctx: ReportContext) -> Section | None:
    samples = collect_samples(ctx.trace, ctx.view_layers, docs_per_domain=ctx.token_docs, max_tokens=ctx.token_count)
    if not samples:
        return None
    body = render_token_view(samples, ctx.view_layers, ctx.trace.vocab, ctx.num_ids)
    note = (
        f"The first {ctx.token_count} tokens of the first {ctx.token_docs} documents of each domain, each token "
        "coloured by its first-choice expert at the layer of its block (as Mixtral Fig. 8). Hover a token to "
        "see its top-k experts and weights. Whitespace and line breaks (↵) are kept, so indentation shows; "
        "runs of one colour are positional locality at work."
    )
    return Section("token-view", "Token view", note, body)
